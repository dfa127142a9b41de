"""The demo's training step and test batch with glibc's default allocator settings, then with
:func:`fwp.allocator.keep_freed_memory`, in one process.

    python benchmarks/cpu_allocator.py [--presets demo demo_boot] [--steps 8] [--threads 1]

The setting cannot be undone in a process, so the default comes first: every workload is timed
with it, then again after the change, on the same model. A training step: the preset's batch of
episodes (drawn as in training), forward, Eq. 5, backward, Adam. A test batch: 50 episodes at
K_test = 10 (the demo's largest), forward only. Medians after 2 warm-up steps of this thread's
CPU time (user and system, page faults included): on a shared machine far steadier than wall
time, which also counts the time other processes hold the core. Minor page faults per step are
printed beside them.
"""

from __future__ import annotations

import argparse
import resource
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
    """``{"train": step(i), "test": batch(i)}`` of preset ``name``."""
    config = from_dict(preset(name))
    train_set, test_set = load_split(config, "train"), load_split(config, "test")
    data, batch = config.data, config.optim.batch_size
    sampler = EpisodeSampler(train_set, data.n_way, data.k_shot, n_query=data.n_query,
                             k_extra=data.k_extra, seed=config.seed)
    model = FewShotLearner(config, train_set.image_shape)
    optimizer = torch.optim.Adam(model.parameters(), config.optim.lr)

    def train(i: int) -> None:
        episodes = sampler.batch(range(i * batch, (i + 1) * batch))
        loss, _, _ = episode_loss(model, episodes, config.loss, with_extra=config.bootstrapped)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def test(i: int) -> None:
        evaluate(model, test_set, data.n_way, 10, 50, seed=i)

    return {"train": train, "test": test}


def measure(run, steps: int, start: int) -> tuple[float, float]:
    """Median CPU seconds and page faults per call of ``run``, after 2 warm-up calls."""
    seconds, faults = [], []
    for i in range(steps + 2):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        begin = time.thread_time()
        run(start + i)
        if i >= 2:
            seconds.append(time.thread_time() - begin)
            faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
    return statistics.median(seconds), statistics.median(faults)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["demo", "demo_boot"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    loads = {name: workloads(name) for name in args.presets}
    rows = [(name, kind) for name in args.presets for kind in ("train", "test")]
    default = {row: measure(loads[row[0]][row[1]], args.steps, 0) for row in rows}
    if not keep_freed_memory():
        print("not glibc: the allocator setting does not apply here")
        return
    kept = {row: measure(loads[row[0]][row[1]], args.steps, 1000) for row in rows}
    print("CPU seconds per training step / test batch (median), page faults per step")
    print("| preset | workload | default | faults | kept memory | faults | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        (old, old_faults), (new, new_faults) = default[row], kept[row]
        print(f"| {row[0]} | {row[1]} | {old:.3f} | {old_faults:.0f} | {new:.3f} | "
              f"{new_faults:.0f} | {old / new:.2f}× |")


if __name__ == "__main__":
    main()
