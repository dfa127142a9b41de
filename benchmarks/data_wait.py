"""The fraction of a training step spent waiting for the next batch of episodes, with the
batches made in the training process (``--data-workers 0``, between steps) and by worker
processes (``--data-workers N``, ahead of the steps), both measured in this one process.

    python benchmarks/data_wait.py [--workers 2] [--steps 10] [--rounds 2] [--threads 1]
    python benchmarks/data_wait.py --paper-preset table1_k10_kp10   # K′ = 10

Two presets: ``demo`` as it trains (28×28 glyphs, 5-way 2-shot, K′ = 3, 16 episodes), and
``table2_k10_boot`` (or ``--paper-preset``) with its episodes in full — 5-way 10-shot, K′ = 5,
one query, 16 episodes of 84×84 RGB images, read from a synthetic image folder (Mini-ImageNet is
not here) through the image cache as Mini-ImageNet would be — but its network reduced
(``--paper-network``, default: Conv-4 with 8 channels, 1 block of width 64; our choice: on a
CPU the full network's step would hide the wait for data still more).

Each round runs, for each setting, a fresh start (workers started, 2 untimed steps) then
``--steps`` timed steps; rounds alternate the settings so that a change of the machine's load
hits both. "waiting" is the time ``next_batch`` takes inside the step: assembling the batch
(0 workers) or taking a ready one (N workers).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, markdown_table  # noqa: E402


def image_folder(root: Path, size: int = 84) -> Path:
    """``root/{train,val,test}/<class>/<i>.png``: random RGB images, enough for K + K′ + Q up
    to 10 + 10 + 1 images per class in 5-way episodes."""
    rng = np.random.default_rng(0)
    for split, classes in (("train", 16), ("val", 5), ("test", 5)):
        for c in range(classes):
            folder = root / split / f"class{c:02d}"
            folder.mkdir(parents=True)
            for i in range(24):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def configs(args: argparse.Namespace, root: Path) -> dict[str, object]:
    from fwp.fewshot.config import from_dict, preset

    demo = preset("demo")
    paper = preset(args.paper_preset)
    paper["data"].update(dataset="folder", data_root=str(root))
    width, channels = args.paper_network
    paper["network"].update(conv_channels=channels, layers=1, d_model=width, heads=4,
                            d_ff=2 * width)
    out = {}
    for name, data in (("demo", demo), (f"{args.paper_preset} (network reduced)", paper)):
        data.update(device="cpu", threads=args.threads)
        out[name] = from_dict(data)
    return out


class Timed:
    """A training whose ``next_batch`` is timed."""

    def __init__(self, config: object, workers: int) -> None:
        from fwp.fewshot.train import FewShotTraining
        from fwp.runs import World

        config.data_workers = workers
        config.validate()
        torch.manual_seed(0)
        self.training = FewShotTraining(config, World(), announce=False)
        self.waited = 0.0
        fetch = self.training.next_batch

        def timed_fetch():
            start = time.perf_counter()
            batch = fetch()
            self.waited += time.perf_counter() - start
            return batch

        self.training.next_batch = timed_fetch

    def run(self, steps: int) -> tuple[float, float]:
        """(seconds per step, seconds waiting per step) over ``steps`` steps after a fresh
        start of the data workers and 2 untimed steps."""
        training = self.training
        training.prepare()
        try:
            for _ in range(2):
                training.train_step()
            self.waited = 0.0
            start = time.perf_counter()
            for _ in range(steps):
                training.train_step()
            return (time.perf_counter() - start) / steps, self.waited / steps
        finally:
            training.close()


def measure(config: object, args: argparse.Namespace) -> list[list[str]]:
    settings = {0: Timed(config, 0), args.workers: Timed(config, args.workers)}
    step: dict[int, list[float]] = {w: [] for w in settings}
    wait: dict[int, list[float]] = {w: [] for w in settings}
    for _ in range(args.rounds):
        for workers, timed in settings.items():
            seconds, waited = timed.run(args.steps)
            step[workers].append(seconds)
            wait[workers].append(waited)
    base = statistics.median(step[0])
    rows = []
    for workers in settings:
        s, w = statistics.median(step[workers]), statistics.median(wait[workers])
        rows.append([str(workers), f"{1000 * s:.0f}", f"{1000 * w:.1f}", f"{w / s:.0%}",
                     f"{base / s:.2f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="data workers to compare with 0")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training")
    parser.add_argument("--paper-preset", default="table2_k10_boot")
    parser.add_argument("--paper-network", type=int, nargs=2, default=(64, 8),
                        metavar=("WIDTH", "CHANNELS"),
                        help="d_model and Conv-4 channels of the reduced paper network")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FWP_CACHE"] = str(Path(tmp) / "cache")
        root = image_folder(Path(tmp) / "images")
        for name, config in configs(args, root).items():
            o = config.optim
            print(f"\n{name}: {o.batch_size} episodes per step, {config.data.n_way}-way "
                  f"{config.data.k_shot}-shot, K′ = {config.k_extra_used}, "
                  f"{args.rounds} rounds × {args.steps} steps (medians over rounds)")
            print(markdown_table(
                ["data workers", "ms per step", "ms waiting for data", "fraction waiting",
                 "steps/s vs 0 workers"], measure(config, args)))


if __name__ == "__main__":
    main()
