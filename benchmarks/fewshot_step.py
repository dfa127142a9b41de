"""Training steps/s of a few-shot preset with each operator path of its core, and where the time
goes: ratios against the reference loop (``core_mode = "recurrent"``) run in the same process.

    python benchmarks/fewshot_step.py [--preset demo] [--threads 1] [--repeats 10]
    python benchmarks/fewshot_step.py --preset table1_k5 --synthetic --paths fused_cpu --repeats 3

``--synthetic`` draws random images of the data set's shape instead of reading it (Mini-ImageNet
3×84×84, Omniglot and glyphs 1×28×28): the speed of a paper preset without its data.

One step = forward of a batch of episodes (support, extra and query images through the backbone,
the sequences through the core), the preset's loss, backward and an Adam step, on a fixed batch
(the same episodes for every path). The breakdown times the backbone alone (forward + backward of
its features for the same images): the part of the step no core kernel can speed up, which bounds
the whole step's speed-up (Amdahl).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, markdown_table  # noqa: E402

from fwp.data import EpisodeSampler  # noqa: E402
from fwp.fewshot.config import from_dict, preset  # noqa: E402
from fwp.fewshot.evaluate import load_split  # noqa: E402
from fwp.fewshot.model import FewShotLearner  # noqa: E402
from fwp.fewshot.train import episode_loss  # noqa: E402

PATHS = {
    "srwm": ["recurrent", "scan", "fused_cpu"],
    "deltanet": ["recurrent", "chunk", "fused_cpu"],
    "linear": ["recurrent", "chunk"],
}
IMAGE_SHAPES = {"miniimagenet": (3, 84, 84), "omniglot": (1, 28, 28), "glyphs": (1, 28, 28),
                "cluttered_glyphs": (3, 28, 28)}


def synthetic_episode(config, batch: int, k_extra: int) -> SimpleNamespace:
    """Random images and labels shaped like a batch of the config's episodes."""
    shape = IMAGE_SHAPES[config.data.dataset]
    n = config.data.n_way

    def part(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n).repeat(k).expand(batch, n * k)
        return torch.rand(batch, n * k, *shape), labels.contiguous()

    support, extra, query = part(config.data.k_shot), part(k_extra), part(config.data.n_query)
    return SimpleNamespace(support_images=support[0], support_labels=support[1],
                           extra_images=extra[0], extra_labels=extra[1],
                           query_images=query[0], query_labels=query[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--model", default=None, help="core to use instead of the preset's")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per path")
    parser.add_argument("--synthetic", action="store_true",
                        help="random images of the data set's shape instead of the data set")
    parser.add_argument("--paths", nargs="+", default=None, metavar="MODE",
                        help="operator paths to time (default: all of the core's; the first is "
                             "the baseline of the ratios)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())

    data = preset(args.preset)
    if args.model:
        data.setdefault("network", {})["model"] = args.model
    config = from_dict(data)
    config.validate()
    k_extra = config.data.k_extra if config.bootstrapped else 0
    if args.synthetic:
        image_shape = IMAGE_SHAPES[config.data.dataset]
        episode = synthetic_episode(config, config.optim.batch_size, k_extra)
    else:
        train_set = load_split(config, "train")
        image_shape = train_set.image_shape
        episode = EpisodeSampler(
            train_set, config.data.n_way, config.data.k_shot, n_query=config.data.n_query,
            k_extra=k_extra, seed=0,
        ).sample(config.optim.batch_size)
    extra = (episode.extra_images, episode.extra_labels) if k_extra else ()
    images = [episode.support_images, episode.query_images, *extra[:1]]
    n_images = sum(x.shape[0] * x.shape[1] for x in images)

    def learner(mode: str) -> tuple[FewShotLearner, torch.optim.Optimizer]:
        config.network.core_mode = mode
        torch.manual_seed(0)
        model = FewShotLearner(config, image_shape).train()
        return model, torch.optim.Adam(model.parameters(), lr=1e-4)

    def full_step(model: FewShotLearner, optimiser: torch.optim.Optimizer) -> None:
        optimiser.zero_grad(set_to_none=True)
        loss, _, _ = episode_loss(model, episode, config.loss, with_extra=bool(k_extra))
        loss.backward()
        optimiser.step()

    def backbone_only(model: FewShotLearner, optimiser: torch.optim.Optimizer) -> None:
        optimiser.zero_grad(set_to_none=True)
        sum(model.features(x).sum() for x in images).backward()

    paths = args.paths or PATHS.get(config.network.model)
    if paths is None:
        raise SystemExit(f"--model {config.network.model} has no operator paths to compare")
    runs = {mode: (full_step, learner(mode)) for mode in paths}
    runs["backbone only"] = (backbone_only, learner(paths[0]))
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for fn, (model, optimiser) in runs.values():
        fn(model, optimiser)  # warm-up (and the first compile of the C++ extension)
    for _ in range(args.repeats):  # round-robin: load changes hit every path alike
        for name, (fn, (model, optimiser)) in runs.items():
            start = time.perf_counter()
            fn(model, optimiser)
            seconds[name].append(time.perf_counter() - start)
    median = {name: statistics.median(times) for name, times in seconds.items()}

    reference = median[paths[0]]
    backbone = median["backbone only"]
    rows = []
    for name in paths:
        rows.append([
            name, f"{1 / median[name]:.2f}", f"{reference / median[name]:.2f}",
            f"{median[name] - backbone:.3f}", f"{(median[name] - backbone) / median[name]:.0%}",
        ])
    rows.append(["backbone only", f"{1 / backbone:.2f}", f"{reference / backbone:.2f}", "", ""])
    print(f"preset {args.preset}, core {config.network.model}, batch {config.optim.batch_size} "
          f"episodes ({n_images} images), {args.threads} thread(s), median of {args.repeats}")
    print(markdown_table(
        ["path", "steps/s", "× reference loop", "s/step outside the backbone", "share"], rows,
    ))
    print(f"bound on the whole step's speed-up with an infinitely fast core: "
          f"{reference / backbone:.2f}×")


if __name__ == "__main__":
    main()
