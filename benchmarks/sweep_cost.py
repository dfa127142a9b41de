"""CPU cost of a sweep's runs, measured on a few steps of each config, and the sweep's projected
wall time on idle cores.

    python benchmarks/sweep_cost.py --grid bootstrapping [--steps 5] [--cores 2]

Per config: CPU seconds of a training step (one thread, process CPU time, so other programs on
a shared machine barely change it), of a validation episode and of a test episode at each K_test,
on random images of the data set's shape (fixed batch). A run costs steps × step + validations
+ the test evaluation; the sweep, run with one job per core, about the sum over runs ÷ cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, markdown_table  # noqa: E402
from fewshot_step import IMAGE_SHAPES, synthetic_episode  # noqa: E402

from fwp.fewshot.grid import build_grid, read_grid_file  # noqa: E402
from fwp.fewshot.model import FewShotLearner  # noqa: E402
from fwp.fewshot.protocols.episodic import episode_loss  # noqa: E402


def cpu_seconds(fn, repeats: int) -> float:
    """Median process CPU time of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return sorted(times)[len(times) // 2]


def run_cost(config, grid, steps: int) -> tuple[float, float, float]:
    """(CPU s per training step, CPU s of the run's validations, CPU s of its test evaluation)."""
    shape = IMAGE_SHAPES[config.data.dataset]
    k_extra = config.data.k_extra if config.bootstrapped else 0
    episode = synthetic_episode(config, config.optim.batch_size, k_extra)
    torch.manual_seed(0)
    model = FewShotLearner(config, shape).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        loss, _, _ = episode_loss(model, episode, config.loss, with_extra=bool(k_extra))
        loss.backward()
        optimiser.step()

    def episode_cost(k: int) -> float:
        """CPU seconds per evaluation episode at k shots (batches of 50, 1 query per class)."""
        n = config.data.n_way
        support = torch.rand(50, n * k, *shape)
        labels = torch.arange(n).repeat(k).expand(50, n * k).contiguous()
        query = torch.rand(50, n, *shape)

        @torch.no_grad()
        def forward() -> None:
            model.eval()
            model.predict(query, model.observe(support, labels))
            model.train()

        return cpu_seconds(forward, 2) / 50

    per_step = cpu_seconds(step, steps)
    validations = config.steps // config.eval_every
    validation = validations * config.val_episodes * episode_cost(config.data.k_shot)
    test = sum(grid.test_episodes * episode_cost(k) for k in grid.k_test)
    return per_step, validation, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default="bootstrapping", help="grid file or shipped grid name")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per config")
    parser.add_argument("--cores", type=int, default=2, help="idle cores of the projection")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine())
    grid = build_grid(read_grid_file(args.grid), args.grid)
    rows, total = [], 0.0
    for name, config in grid.configs.items():
        per_step, validation, test = run_cost(config, grid, args.steps)
        run = config.steps * per_step + validation + test
        total += run * len(grid.seeds)
        rows.append([name, f"{per_step:.2f}", str(config.steps), f"{validation / 60:.1f}",
                     f"{test / 60:.1f}", f"{run / 60:.1f}"])
        print(rows[-1], flush=True)
    print(markdown_table(["config", "CPU s/step", "steps", "validation (min)", "test (min)",
                          "per run (min)"], rows))
    print(f"{len(grid.configs)} configs × {len(grid.seeds)} seeds: {total / 3600:.2f} CPU hours; "
          f"about {total / 3600 / args.cores:.2f} h of wall time on {args.cores} idle cores "
          f"(--jobs {args.cores})")


if __name__ == "__main__":
    main()
