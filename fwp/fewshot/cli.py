"""``fwp fewshot {inspect,train,eval,report,explain,sweep,import}``: argparse glue around
:mod:`fwp.fewshot.train`, :mod:`fwp.fewshot.evaluate`, :mod:`fwp.fewshot.report`,
:mod:`fwp.fewshot.explain`, :mod:`fwp.fewshot.plots`, :mod:`fwp.fewshot.sweep` and
:mod:`fwp.fewshot.public`. Heavy
imports (data sets, matplotlib) happen inside the commands."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from fwp import config as core
from fwp.config import to_dict, write_atomic
from fwp.data import SPLITS
from fwp.errors import UserError
from fwp.fewshot.config import (
    DataConfig,
    RunConfig,
    add_config_flags,
    config_from_args,
    file_layers,
)
from fwp.runs.folder import check_output_path
from fwp.runs.policy import kept_over_files


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the few-shot commands to ``fwp fewshot``: ``add_<command>`` adds one command's parser,
    ``cmd_<command>`` runs it."""
    for add in (add_inspect, add_train, add_eval, add_report, add_explain, add_sweep,
                add_import):
        add(subparsers)


def add_inspect(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="print classes and images per split, and draw one episode",
        description="Check that a data set is read right: prints classes and images per split "
        "and writes a picture of one episode (rows by label: support, extra, then query images).",
    )
    # single_query and val_split shape training and validation, not the drawn episode
    core.add_flags(p, DataConfig, skip=("val_split", "single_query"), title="data")
    p.add_argument("--split", default="train", choices=SPLITS)
    p.add_argument("--seed", type=int, default=0, help="episode seed")
    p.add_argument("--episode", type=int, default=0, help="which episode to draw")
    p.add_argument(
                   "--out",
                   type=Path,
                   default=None,
                   metavar="FILE.png",
                   help="picture path (default: episode-<dataset>-<split>.png)",
                   )
    p.set_defaults(func=cmd_inspect)


def add_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a sequential few-shot learner (seed paper Eq. 5)",
        description="Train a few-shot learner. Values: defaults ← --preset ← --config ← flags.",
    )
    p.add_argument("--out", required=True, metavar="RUN", help="run folder to create")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (flags override its "
                   "saved config, e.g. --steps to train longer)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show a progress bar")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)


def add_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="accuracy per K_test on fixed seeded episodes: 95%% CI and std over repeats",
        description="Accuracy per K_test on fixed, seeded test episodes. Prints the mean with "
        "the 95 % confidence interval over all episodes and, with --repeats R > 1, the mean ± "
        "std over the R repeats of --episodes new episodes each (the seed paper's ±). Defaults "
        "come from the run's config (test_episodes, test_repeats, single_query): the paper "
        "presets use the public protocol, 10 repeats of 16,000 one-query episodes. Runs of "
        "--protocol delayed / sequential / continual get their protocol's numbers on --episodes "
        "fixed streams instead, and a plot in the run folder (docs/fewshot_protocols.md).",
    )
    p.add_argument("run", metavar="RUN", help="run folder made by `fwp fewshot train`")
    p.add_argument("--k-test", type=_positive, nargs="+", default=None,
                   metavar="K", help="shots per class before the query (default: 1 5 10 15)")
    p.add_argument("--episodes", type=_positive, default=None,
                   help="fixed test episodes per K_test and repeat (default: the run's "
                   "test_episodes, 1000 unless a preset says otherwise)")
    p.add_argument("--repeats", type=_positive, default=None, metavar="R",
                   help="repeats of --episodes new episodes; mean ± std over them "
                   "(default: the run's test_repeats)")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--data-root", metavar="DIR",
                   help="where the data set lives now (default: the run's --data-root)")
    p.add_argument("--n-query", type=_positive, default=None,
                   help="queries per class and episode (default: 1)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="best validation checkpoint or the last one (default: best)")
    p.add_argument("--batch-size", type=_positive, default=50,
                   help="episodes per forward pass (default: 50)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.set_defaults(func=cmd_eval)


def add_report(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="markdown table and plot of accuracy against K_test for evaluated runs",
        description="Report on a sweep folder (rewrites DIR/report.md from the runs evaluated "
                    "so far, with the paired verdicts) or on evaluated run folders (into --out).",
    )
    p.add_argument("runs", metavar="DIR|RUN", nargs="+",
                   help="a sweep folder, or evaluated run folders")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where to write the report of run folders")
    p.add_argument("--split", default=None, choices=SPLITS,
                   help="the split reported for run folders (default: test)")
    p.set_defaults(func=cmd_report)


def add_explain(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain", help="each support example's effect on one query's prediction (fast weights)",
        description="Split one query's prediction over the support examples through the "
        "FWP-attention duality; writes explain.json, attribution.png and fast_weights.png.",
    )
    p.add_argument("run", metavar="RUN", help="run folder with a srwm, deltanet or linear "
                   "core, made by `fwp fewshot train`")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="folder for the JSON and the two pictures")
    p.add_argument("--episode-seed", type=int, default=None, metavar="S",
                   help="episode seed (default: the seed of `fwp fewshot eval`)")
    p.add_argument("--episode", type=int, default=0, help="episode index (default: 0)")
    p.add_argument("--query", type=int, default=0,
                   help="which of the episode's N queries (default: 0)")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--data-root", metavar="DIR",
                   help="where the data set lives now (default: the run's --data-root)")
    p.add_argument("--k-shot", type=_positive, default=None, metavar="K",
                   help="shots per class (default: the run's K)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--layer", type=int, default=None, metavar="L",
                   help="block drawn in fast_weights.png (default: the last)")
    p.add_argument("--head", type=int, default=0, metavar="H",
                   help="head drawn in fast_weights.png (default: 0)")
    p.set_defaults(func=cmd_explain)


def add_sweep(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep", help="train and evaluate a grid of configs × seeds; report with paired verdicts",
        description="Train every (config, seed) of a grid into DIR/runs/<config>/seed<k>/, "
        "evaluate each on the same fixed test episodes, and write DIR/report.md with mean ± std "
        "over seeds and, for configs differing only in β2, the paired difference and a verdict. "
        "Run it again to resume: evaluated runs are skipped, half-trained ones resumed.",
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="sweep folder (created)")
    p.add_argument("--grid", metavar="FILE",
                   help="grid TOML file, or the name of a grid shipped in fwp/fewshot/sweeps "
                   "(default: DIR/grid.json of an earlier start)")
    p.add_argument("--preset", action="append", default=[], metavar="NAME",
                   help="a config of the grid (repeatable)")
    p.add_argument("--set", action="append", default=[], type=_field_value,
                   metavar="FIELD=VALUE", help="a field of every config, e.g. steps=800 "
                   "(repeatable; FIELD is a flag of `fwp fewshot train`)")
    p.add_argument("--vary", action="append", default=[], type=_field_values,
                   metavar="FIELD=V1,V2", help="every config × each value, e.g. beta2=0,5 "
                   "(repeatable: the product)")
    p.add_argument("--seeds", type=int, nargs="+", metavar="S",
                   help="training seeds (default: 1 2 3)")
    p.add_argument("--k-test", type=_positive, nargs="+", metavar="K",
                   help="shots per class at test time (default: 1 5 10 15)")
    p.add_argument("--episodes", type=_positive, metavar="E",
                   help="fixed test episodes per K_test (default: 1000)")
    p.add_argument("--jobs", type=_positive, default=None,
                   help="runs trained at once, the CPU threads split among them (default: 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads in all (default 0: every core)")
    p.add_argument("--only", action="append", default=[], metavar="CONFIG",
                   help="train only this config of the grid (repeatable); the saved grid "
                   "and the report keep them all")
    p.set_defaults(func=cmd_sweep)


def add_import(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import", help="a checkpoint of the public few-shot SRWM code as a run folder",
        description="Read a checkpoint saved by the public few-shot SRWM code "
        "(IDSIA/modern-srwm, supervised_learning/: --model_type stateful_srwm or srwm) into a "
        "new run folder, so that `fwp fewshot eval RUN` evaluates it. The network comes from "
        "--preset / --config / flags (a paper preset, e.g. table2_k10_boot for the public "
        "pretrained_miniimagenet_10shot_5bootstrap_srwm_conv4.pt) and is checked against the "
        "file; the query gets the public code's label input (class 0's one-hot).",
    )
    p.add_argument("checkpoint", type=Path, metavar="FILE.pt", help="the public checkpoint")
    p.add_argument("--out", required=True, type=Path, metavar="RUN", help="run folder to create")
    add_config_flags(p)
    p.set_defaults(func=cmd_import)


def _field_value(text: str) -> tuple[str, object]:
    """``FIELD=VALUE`` (the value as :func:`fwp.config.parse_value` reads it)."""
    ((key, value),) = core.parse_options(text).items()
    return key, value


def _field_values(text: str) -> tuple[str, list]:
    """``FIELD=V1,V2,...``: each value as :func:`fwp.config.parse_value` reads it."""
    key, _, values = text.partition("=")
    if not key or not values:
        raise argparse.ArgumentTypeError(f"expected FIELD=V1,V2,..., got {text!r}")
    return key, [core.parse_value(v) for v in values.split(",")]


def cmd_inspect(args: argparse.Namespace) -> int:
    from fwp.data import EpisodeSampler, load_dataset
    from fwp.fewshot.plots import draw_episode

    data = core.resolve(DataConfig, [("the command line", core.given(args, DataConfig))])
    core.check_choices(data)
    out = args.out or Path(f"episode-{data.dataset}-{args.split}.png")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; pass the picture's file name, e.g. "
                        f"{out / 'episode.png'}")
    check_output_path(out, folder=False)
    start = time.perf_counter()
    where = f" under {data.data_root}" if data.data_root else ""
    print(f"{data.dataset}{where}")
    datasets = {}
    for split in SPLITS:
        try:
            datasets[split] = load_dataset(data.dataset, data.data_root, split,
                                           **data.data_options)
        except UserError as error:
            if split == args.split:
                raise
            print(f"  {split:5}  unavailable: {error}")
            continue
        print(f"  {split:5}  {datasets[split].describe()}")
    print(f"loaded in {time.perf_counter() - start:.2f} s")
    dataset = datasets[args.split]
    sampler = EpisodeSampler(
        dataset, data.n_way, data.k_shot, n_query=data.n_query, k_extra=data.k_extra, seed=args.seed
    )
    episode = sampler.episode(args.episode)
    draw_episode(episode, [dataset.class_names[c] for c in episode.classes[0].tolist()], out)
    print(
        f"episode {args.episode} (seed {args.seed}) of {args.split}, "
        f"{data.n_way}-way {data.k_shot}-shot:"
    )
    for label, c in enumerate(episode.classes[0].tolist()):
        print(f"  label {label}: {dataset.class_names[c]}")
    print(f"wrote {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from fwp.fewshot.checkpoint import read_config
    from fwp.fewshot.train import train

    out = Path(args.out)
    check_output_path(out)
    base = to_dict(read_config(out)) if args.resume else None
    config = config_from_args(args, base=base)
    if base is not None and int(os.environ.get("RANK", "0")) == 0:
        flags = core.given(args, RunConfig)
        for where, data in file_layers(args):
            kept = kept_over_files(RunConfig, base, data or {}, flags)
            if kept:
                print(f"fwp: the run keeps its own config over {where}: {', '.join(kept)} "
                      f"(give a flag to change a field)", flush=True)
    summary = train(config, out, resume=args.resume, progress=args.progress)
    if int(os.environ.get("RANK", "0")) == 0:
        best = summary["best"]
        validated = (
            f"best validation accuracy {best['accuracy']:.2f} % at step {best['step']}"
            if best["step"] > 0 else "no validation yet"
        )
        print(f"{out}: {summary['status']} at step {summary['step']}; {validated}")
    return 130 if summary["status"] == "interrupted" else 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from fwp.fewshot.checkpoint import read_config
    from fwp.fewshot.evaluate import EVAL_SEED, evaluate, load_split, load_trained
    from fwp.fewshot.report import eval_file

    run = Path(args.run)
    config = read_config(run)
    _check_eval_flags(args, run, config)
    check_output_path(run, "the run folder")  # eval_<split>.json goes there
    model, source = load_trained(run, config, args.checkpoint)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    model.to(device)
    if config.protocol.protocol != "episodic":
        return _eval_protocol(args, run, config, model, source)
    dataset = load_split(config, args.split, args.data_root)
    k_test, n_query = args.k_test or [1, 5, 10, 15], args.n_query or 1
    episodes = args.episodes or config.test_episodes
    repeats = args.repeats or config.test_repeats
    single = config.data.single_query
    for k in k_test:  # every K_test is checked before the first is evaluated
        dataset.check_episode(config.data.n_way, k + (1 if single else n_query))
    results = []
    queries = "one query" if single else f"{n_query} queries per class"
    print(f"{run}: {source['path']} (step {source['step']}), {config.data.n_way}-way, "
          f"{repeats} × {episodes} {args.split} episodes ({queries} each)")
    print("  accuracy ± 95 % CI over all episodes"
          + ("; mean ± std over the repeats (the seed paper's ±)" if repeats > 1 else ""))
    for k in k_test:
        start = time.perf_counter()
        result = evaluate(model, dataset, config.data.n_way, k, episodes,
                          n_query=n_query, seed=EVAL_SEED, batch_size=args.batch_size,
                          amp=config.amp, single_query=single, repeats=repeats)
        results.append(result)
        over_repeats = (f"; {result['accuracy']:6.2f} ± {result['repeat_std']:.2f} % over "
                        f"{repeats} repeats" if repeats > 1 else "")
        print(f"  K_test {k:3d}: {result['accuracy']:6.2f} ± {result['ci95']:.2f} %"
              f"{over_repeats} ({time.perf_counter() - start:.1f} s)")
    write_atomic(run / eval_file(args.split), {
        "split": args.split, "checkpoint": source, "episodes": episodes, "repeats": repeats,
        "n_query": 1 if single else n_query, "single_query": single, "seed": EVAL_SEED,
        "results": results,
    })
    return 0


def _check_eval_flags(args: argparse.Namespace, run: Path, config: RunConfig) -> None:
    """Refuse the flags that this run's evaluation would not read, and a K_test given twice."""
    protocol = config.protocol.protocol
    given = [f"--{name.replace('_', '-')}" for name in ("k_test", "repeats", "n_query")
             if getattr(args, name) is not None]
    if protocol != "episodic" and given:
        verb, them = ("does", "it") if len(given) == 1 else ("do", "them")
        raise UserError(f"{' '.join(given)} {verb} nothing for {run}: it is a {protocol} run, "
                        f"evaluated on --episodes fixed streams of its own shape; drop {them}")
    if config.data.single_query and args.n_query is not None:
        raise UserError(f"--n-query does nothing for {run}: it answers one query per episode "
                        "(single_query, the public protocol); drop it")
    repeated = sorted({k for k in args.k_test or [] if args.k_test.count(k) > 1})
    if repeated:
        raise UserError(f"--k-test names {', '.join(map(str, repeated))} twice; give each K "
                        "once")


def _eval_protocol(args: argparse.Namespace, run: Path, config, model, source: dict) -> int:
    """``delayed`` / ``sequential`` / ``continual`` runs: the protocol's numbers on fixed
    streams, into ``eval_<split>.json``, a table on screen and ``<protocol>_<split>.png``."""
    from fwp.fewshot.evaluate import EVAL_SEED
    from fwp.fewshot.protocols import build_task
    from fwp.fewshot.protocols.plots import plot_continual, plot_streams
    from fwp.fewshot.protocols.report import describe
    from fwp.fewshot.report import eval_file

    protocol = config.protocol.protocol
    episodes = args.episodes or config.test_episodes
    task = build_task(config, args.split, EVAL_SEED, data_root=args.data_root)
    print(f"{run}: {source['path']} (step {source['step']}), {episodes} {args.split} streams, "
          f"{protocol}, {config.data.n_way}-way, {config.data.k_shot} per class")
    start = time.perf_counter()
    result = task.evaluate(model, episodes, batch_size=args.batch_size, amp=config.amp)
    print(describe(run.name, protocol, result, config.protocol.forget_weight))
    print(f"({time.perf_counter() - start:.1f} s)")
    write_atomic(run / eval_file(args.split), {
        "split": args.split, "checkpoint": source, "episodes": episodes, "seed": EVAL_SEED,
        "protocol": protocol, "result": result,
    })
    figure = run / f"{protocol}_{args.split}.png"
    title = f"{run.name}: {protocol}, {config.data.n_way}-way, {args.split} ({episodes} streams)"
    draw = plot_continual if protocol == "continual" else plot_streams
    draw(result, figure, title, config.data.n_way)
    print(f"wrote {run / eval_file(args.split)} and {figure}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fwp.fewshot.grid import GRID, load_saved_grid
    from fwp.fewshot.report import write_report

    runs = [Path(r) for r in args.runs]
    if len(runs) == 1 and (runs[0] / GRID).is_file():  # a sweep folder
        from fwp.fewshot.sweep_report import write_report as write_sweep_report

        if args.out is not None or args.split is not None:
            raise UserError("--out and --split are for run folders; a sweep folder's report is "
                            "written into it, on the test split: drop them")
        check_output_path(runs[0], "DIR")
        print(write_sweep_report(runs[0], load_saved_grid(runs[0])).read_text())
        return 0
    if args.out is None:
        raise UserError("run folders need --out DIR for the report (or give one sweep folder)")
    check_output_path(Path(args.out))
    seen: dict[Path, Path] = {}
    for run in runs:
        first = seen.setdefault(run.resolve(), run)
        if first is not run:
            raise UserError(f"{run} is given twice (also as {first}); a run counted twice would "
                            "weigh double in its group's mean: give each run once")
    table, figure = write_report(runs, Path(args.out), args.split or "test")
    print(table.read_text())
    print(f"wrote {table} and {figure}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from fwp.fewshot.evaluate import EVAL_SEED
    from fwp.fewshot.explain_run import explain_run

    seed = EVAL_SEED if args.episode_seed is None else args.episode_seed
    check_output_path(args.out)
    result = explain_run(
        Path(args.run), args.out, episode_seed=seed, episode=args.episode, query=args.query,
        split=args.split, data_root=args.data_root, k_shot=args.k_shot,
        checkpoint=args.checkpoint, layer=args.layer, head=args.head,
    )
    order = result.effects.argsort(descending=True).tolist()

    def described(t: int) -> str:
        return (f"t = {t} (label {int(result.support_labels[t])}) {float(result.effects[t]):+.3g}"
                f" (left out: {float(result.leave_one_out[t]):+.3g})")

    print(f"{args.run}: episode {args.episode} (seed {seed}), query {args.query}: "
          f"true label {result.query_label}, predicted {result.predicted}")
    print("  effect on the predicted logit of removing a support example's writes (all blocks;"
          " in brackets: of running the episode without it):")
    print(f"    largest: {', '.join(described(t) for t in order[:3])}")
    print(f"    smallest: {described(order[-1])}")
    print(f"wrote {args.out / 'explain.json'}, attribution.png and fast_weights.png")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from fwp.environment import warn_threads
    from fwp.fewshot.grid import (
        build_grid,
        grid_spec_from_args,
        load_saved_grid,
        read_grid_file,
    )
    from fwp.fewshot.sweep import sweep

    if args.threads is not None and args.threads < 0:
        raise UserError(f"--threads must be ≥ 0 (got {args.threads}); 0 uses every core")
    if args.grid and Path(args.grid).is_dir():
        raise UserError(f"--grid {args.grid} is a folder; pass a grid TOML file (or the name of "
                        "a shipped grid)")
    warn_threads(args.threads or 0)
    given = args.grid or args.preset or args.set or args.vary or args.seeds or args.k_test
    if args.grid or args.preset:
        base = read_grid_file(args.grid) if args.grid else None
        spec = grid_spec_from_args(args.preset, args.set, args.vary, args.seeds, args.k_test,
                                   args.episodes, base)
        grid = build_grid(spec, args.grid or "the command line")
    elif given or args.episodes:
        raise UserError("--set, --vary, --seeds, --k-test and --episodes change a grid: also "
                        "give --grid FILE or --preset NAME")
    else:
        grid = load_saved_grid(args.dir)
    if args.only:
        grid.restricted(args.only)  # an unknown name is refused before any work
    check_output_path(args.dir, "DIR")
    sweep(grid, args.dir, jobs=args.jobs or 1, threads=args.threads or 0,
          log=lambda line: print(line, flush=True), only=args.only)
    print(f"wrote {args.dir / 'report.md'}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from fwp.fewshot.evaluate import load_split
    from fwp.fewshot.public import import_public

    if not (args.preset or args.config):
        raise UserError("give the network of the checkpoint: --preset NAME (a paper preset, e.g. "
                        "table2_k10_boot) or --config FILE, with flags for what its script changed")
    config = config_from_args(args)
    if "query_input" not in core.given(args, RunConfig).get("network", {}):
        config.network.query_input = "class0"
    elif config.network.query_input != "class0":
        print("fwp: the public code trained this model with class 0's one-hot as the query's "
              f"label input; evaluating with --query-input {config.network.query_input}")
    image_shape = load_split(config, "test").image_shape
    done = import_public(args.checkpoint, args.out, config, image_shape)
    recorded = ("" if done["valid_accuracy"] is None
                else f", validation accuracy {done['valid_accuracy']:.2f} % in the file")
    print(f"{args.out}: imported {args.checkpoint} ({done['layout']} layout, step {done['step']}"
          f"{recorded}); evaluate it with `fwp fewshot eval {args.out}`")
    return 0
