"""``fwp fewshot <command>``: the few-shot commands.

``register`` adds every command in ``COMMANDS``; a command is a function that adds its parser and
sets ``func``. Heavy imports (torch, data sets, matplotlib) happen inside the command functions, so
``fwp --help`` stays fast. ``add_data_arguments`` / ``dataset_from_args`` are shared by commands.
"""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path

from fwp.errors import UserError

DATASET_NAMES = ("glyphs", "cluttered_glyphs", "omniglot", "miniimagenet", "folder")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """--dataset, --data-root, --data-option KEY=VALUE (repeatable)."""
    parser.add_argument(
        "--dataset",
        default="glyphs",
        choices=DATASET_NAMES,
        help="data set (default: glyphs, built in, nothing to download)",
    )
    parser.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="folder with the data set's files (not for the built-in glyphs sets)",
    )
    parser.add_argument(
        "--data-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a loader option, e.g. rotations=True, split_scheme=vinyals, "
        "image_size=28 (repeatable)",
    )


def data_options(args: argparse.Namespace) -> dict[str, object]:
    """The --data-option pairs as a dict; values are Python literals where they parse as one."""
    options: dict[str, object] = {}
    for item in args.data_option:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"--data-option expects KEY=VALUE, got '{item}'")
        try:
            options[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key] = text
    return options


def dataset_from_args(args: argparse.Namespace, split: str):
    """The ``FewShotDataset`` that --dataset / --data-root / --data-option name, split ``split``."""
    from fwp.data import load_dataset

    return load_dataset(args.dataset, args.data_root, split, **data_options(args))


def add_inspect(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "inspect",
        help="print classes and images per split, and draw one episode",
        description="Check that a data set is read right: prints classes and images per split "
        "and writes a picture of one episode (rows by label: support, extra, then query images).",
    )
    add_data_arguments(parser)
    parser.add_argument("--split", default="train", choices=("train", "val", "test"))
    parser.add_argument("--n-way", type=int, default=5)
    parser.add_argument("--k-shot", type=int, default=5)
    parser.add_argument("--k-extra", type=int, default=0)
    parser.add_argument("--n-query", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="episode seed")
    parser.add_argument("--episode", type=int, default=0, help="which episode to draw")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE.png",
        help="picture path (default: episode-<dataset>-<split>.png)",
    )
    parser.set_defaults(func=inspect_command)


def inspect_command(args: argparse.Namespace) -> int:
    from fwp.data import SPLITS, EpisodeSampler

    start = time.perf_counter()
    where = f" under {args.data_root}" if args.data_root else ""
    print(f"{args.dataset}{where}")
    datasets = {}
    for split in SPLITS:
        try:
            datasets[split] = dataset_from_args(args, split)
        except UserError as error:
            if split == args.split:
                raise
            print(f"  {split:5}  unavailable: {error}")
            continue
        print(f"  {split:5}  {datasets[split].describe()}")
    print(f"loaded in {time.perf_counter() - start:.2f} s")
    dataset = datasets[args.split]
    sampler = EpisodeSampler(
        dataset, args.n_way, args.k_shot, n_query=args.n_query, k_extra=args.k_extra, seed=args.seed
    )
    episode = sampler.episode(args.episode)
    out = args.out or Path(f"episode-{args.dataset}-{args.split}.png")
    draw_episode(episode, [dataset.class_names[c] for c in episode.classes[0].tolist()], out)
    print(
        f"episode {args.episode} (seed {args.seed}) of {args.split}, "
        f"{args.n_way}-way {args.k_shot}-shot:"
    )
    for label, c in enumerate(episode.classes[0].tolist()):
        print(f"  label {label}: {dataset.class_names[c]}")
    print(f"wrote {out}")
    return 0


def draw_episode(episode, class_names: list[str], out: Path) -> None:
    """Episode 0 of the batch as a grid: one row per label, support | extra | query columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sections = [
        (name, getattr(episode, f"{name}_images")[0], getattr(episode, f"{name}_labels")[0])
        for name in ("support", "extra", "query")
    ]
    sections = [(name, images, labels) for name, images, labels in sections if len(labels)]
    n = len(class_names)
    c, h, w = sections[0][1].shape[1:]
    pad, gap = 2, 12
    widths = [int((labels == 0).sum()) for _, _, labels in sections]
    total_w = sum(k * (w + pad) for k in widths) + gap * (len(sections) - 1)
    canvas = np.ones((n * (h + pad), total_w, 3), np.float32)
    x0, centres = 0, []
    for (_, images, labels), k in zip(sections, widths):
        for label in range(n):
            for j, image in enumerate(images[labels == label]):
                y, x = label * (h + pad), x0 + j * (w + pad)
                canvas[y : y + h, x : x + w] = image.permute(1, 2, 0).expand(h, w, 3).numpy()
        centres.append(x0 + k * (w + pad) / 2)
        x0 += k * (w + pad) + gap
    scale = 0.02
    fig, ax = plt.subplots(
        figsize=(max(4.0, total_w * scale + 3.5), max(2.0, n * (h + pad) * scale + 0.8))
    )
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks(centres, [name for name, _, _ in sections])
    ax.xaxis.tick_top()
    ax.set_yticks(
        [i * (h + pad) + h / 2 for i in range(n)],
        [f"{i}: {name[:38]}" for i, name in enumerate(class_names)],
        fontsize=7,
    )
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.tight_layout()
    fig.savefig(out, dpi=150, bbox_inches="tight")
    plt.close(fig)


COMMANDS = (add_inspect,)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add every few-shot command to ``fwp fewshot``: inspect, then train, eval, report and
    explain."""
    from fwp.fewshot import commands

    for add in COMMANDS:
        add(subparsers)
    commands.register(subparsers)
