"""Training and evaluation speed of the demo presets with glibc's default allocator settings and
with :func:`fwp.allocator.keep_freed_memory`, in one process: the default first (it cannot be
restored once changed), then the same steps again after the change.

    python benchmarks/cpu_allocator.py [--presets demo demo_boot] [--steps 8] [--threads 1]

A training step: the preset's batch of episodes (drawn as in training), forward, Eq. 5, backward,
Adam. An evaluation batch: 50 test episodes at K_test = 10 (the demo's largest), forward only.
Each measurement warms up for 2 steps and reports the median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402

from fwp.allocator import keep_freed_memory  # noqa: E402
from fwp.data import EpisodeSampler  # noqa: E402
from fwp.fewshot.config import from_dict, preset  # noqa: E402
from fwp.fewshot.evaluate import evaluate, load_split  # noqa: E402
from fwp.fewshot.model import FewShotLearner  # noqa: E402
from fwp.fewshot.train import episode_loss  # noqa: E402


def workloads(name: str) -> dict:
    """``{"train": step(i), "eval": batch(i)}`` of preset ``name``, timed by the caller."""
    config = from_dict(preset(name))
    train_set, test_set = load_split(config, "train"), load_split(config, "test")
    data = config.data
    sampler = EpisodeSampler(train_set, data.n_way, data.k_shot, n_query=data.n_query,
                             k_extra=data.k_extra, seed=config.seed)
    model = FewShotLearner(config, train_set.image_shape)
    optimizer = torch.optim.Adam(model.parameters(), config.optim.lr)
    batch = config.optim.batch_size

    def train(i: int) -> None:
        episodes = sampler.batch(range(i * batch, (i + 1) * batch))
        loss, _, _ = episode_loss(model, episodes, config.loss, with_extra=config.bootstrapped)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def test(i: int) -> None:
        evaluate(model, test_set, data.n_way, 10, 50, seed=i)

    return {"train": train, "eval": test}


def median_seconds(run, steps: int, start: int) -> float:
    for i in range(2):
        run(start + i)
    times = []
    for i in range(2, steps + 2):
        begin = time.perf_counter()
        run(start + i)
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["demo", "demo_boot"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    loads = {name: workloads(name) for name in args.presets}
    rows = [(name, kind) for name in args.presets for kind in ("train", "eval")]
    before = {row: median_seconds(loads[row[0]][row[1]], args.steps, 0) for row in rows}
    if not keep_freed_memory():
        print("not glibc: the allocator was not changed")
        return
    after = {row: median_seconds(loads[row[0]][row[1]], args.steps, 100) for row in rows}
    print("| preset | workload | s (glibc default) | s (keep freed memory) | speed-up |")
    print("|---|---|---|---|---|")
    for name, kind in rows:
        b, a = before[name, kind], after[name, kind]
        print(f"| {name} | {kind} | {b:.3f} | {a:.3f} | {b / a:.2f}× |")


if __name__ == "__main__":
    main()
