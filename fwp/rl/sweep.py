"""A grid of ``fwp rl`` runs × seeds, resumable, then the report.

A grid file (TOML) lists seeds and named runs, each a (partial) run config that may start from a
preset (``base = "NAME"``)::

    seeds = [1, 2, 3]
    [runs.cartpole_lstm]
    base = "cartpole"
    network = { model = "lstm" }

Every run trains into ``DIR/runs/<name>/seed<k>/``: a finished one (``eval.json``) is skipped,
an unfinished one resumes from its checkpoint, so the same command continues a stopped study.
``DIR/report.md`` and ``DIR/returns.png`` are rewritten at the end.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from fwp import config as core
from fwp.config import read_file, to_dict, write_atomic
from fwp.errors import UserError
from fwp.rl.config import PRESETS, RLConfig, from_dict
from fwp.rl.envs import check_env
from fwp.rl.report import write_report
from fwp.rl.train import EVAL, frames_per_update, train
from fwp.runs import RunFolder
from fwp.runs.sweep import (
    Estimate,
    check_name,
    check_run_folders,
    duration,
    grid_path,
    pending_runs,
    run_all,
    trained_steps,
)

GRIDS = Path(__file__).parent / "grids"


def read_grid(path: str | Path) -> tuple[list[int], dict[str, RLConfig]]:
    """Seeds and named configs of a grid file (a name of ``fwp/rl/grids/`` or a path)."""
    path = grid_path(str(path), GRIDS)
    data = read_file(path)
    seeds, runs = data.get("seeds", [1]), data.get("runs", {})
    if not runs or not seeds or not all(isinstance(s, int) for s in seeds):
        raise UserError(f"{path} needs `seeds = [..]` (integers) and at least one [runs.NAME]")
    configs = {}
    for name, entry in runs.items():
        entry = dict(entry)
        base = core.read_preset(PRESETS, entry.pop("base"), RLConfig) if "base" in entry else {}
        configs[check_name(name, "run name")] = core.resolve(
            RLConfig, [("preset", base), (f"{path} [{name}]", entry)])
        configs[name].validate()
    return seeds, configs


def _work(task: tuple[dict, str]) -> tuple[str, dict[str, Any], float]:
    config, folder = task
    tic = time.perf_counter()
    result = train(from_dict(config), Path(folder), log=None)
    return folder, result, time.perf_counter() - tic


def sweep(grid: str | Path, out: Path, jobs: int = 1, log: Any = print) -> str:
    """Train every run × seed of ``grid`` into ``out`` (``jobs`` processes) on the sweep engine
    of :mod:`fwp.runs.sweep`, then write the report; returns its text."""
    say = log or (lambda _msg: None)
    seeds, configs = read_grid(grid)
    # every environment is checked before any work
    specs = {env: check_env(env) for env in sorted({c.env for c in configs.values()})}
    runs = [(name, out / "runs" / name / f"seed{seed}", dataclasses.replace(config, seed=seed))
            for name, config in configs.items() for seed in seeds]
    check_run_folders(runs, "use a new study folder, or delete that run folder to retrain it")
    with RunFolder(out).locked("sweep"):
        write_atomic(out / "grid.json", {"seeds": seeds,
                                         "runs": {n: to_dict(c) for n, c in configs.items()}})
        pending = pending_runs(runs, EVAL, jobs, lambda line: say(f"{out}: {line}"))
        # Counted in frames, not updates: a config with no finished run yet is estimated at
        # the mean time per frame of the others, which varies less between learners than the
        # time per update (R2AC's updates are 8× smaller than PPO's).
        # (a resumed run: the frames it has left)
        steps = {f: c["frames"] - trained_steps(Path(f))
                 * frames_per_update(from_dict(c), specs[c["env"]]) for c, f in pending}
        estimate = Estimate(steps, jobs, group=lambda folder: Path(folder).parent.name)

        def done(result: tuple[str, dict[str, Any], float]) -> None:
            folder, evaluation, seconds = result
            evaluating = evaluation.get("eval_seconds", 0.0)
            left = estimate.finish(folder, steps[folder], seconds - evaluating, seconds)
            say(f"{folder}: evaluation mean return {evaluation['mean_return']:.2f} in "
                f"{duration(seconds)}; {left}")

        run_all(pending, _work, jobs, done)  # a stop propagates: the same command resumes
    return write_report([folder for _, folder, _ in runs if (folder / "config.json").is_file()],
                        out)
