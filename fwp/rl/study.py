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
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from fwp import config as core
from fwp.config import read_file, to_dict, write_atomic
from fwp.errors import UserError
from fwp.rl.config import PRESETS, RLConfig
from fwp.rl.envs import check_env
from fwp.rl.report import write_report
from fwp.rl.train import EVAL, train

GRIDS = Path(__file__).parent / "grids"


def read_grid(path: str | Path) -> tuple[list[int], dict[str, RLConfig]]:
    """Seeds and named configs of a grid file (a name of ``fwp/rl/grids/`` or a path)."""
    path = Path(path)
    if not path.is_file() and (GRIDS / f"{path}.toml").is_file():
        path = GRIDS / f"{path}.toml"
    data = read_file(path)
    seeds, runs = data.get("seeds", [1]), data.get("runs", {})
    if not runs or not all(isinstance(s, int) for s in seeds):
        raise UserError(f"{path} needs `seeds = [..]` (integers) and at least one [runs.NAME]")
    configs = {}
    for name, entry in runs.items():
        entry = dict(entry)
        base = core.read_preset(PRESETS, entry.pop("base"), RLConfig) if "base" in entry else {}
        configs[name] = core.resolve(RLConfig, [("preset", base), (f"{path} [{name}]", entry)])
        configs[name].validate()
    return seeds, configs


def _run(config: RLConfig, out: Path) -> tuple[str, float]:
    result = train(config, out, log=None)
    return str(out), float(result["mean_return"])


def study(grid: str | Path, out: Path, jobs: int = 1, log: Any = print) -> str:
    """Train every run × seed of ``grid`` into ``out`` (``jobs`` processes), then report."""
    log = log or (lambda _msg: None)
    seeds, configs = read_grid(grid)
    for env in sorted({c.env for c in configs.values()}):
        check_env(env)  # a missing package or a bad space: one line, before any work
    todo = []
    for name, config in configs.items():
        for seed in seeds:
            config_s = dataclasses.replace(config, seed=seed)
            folder = out / "runs" / name / f"seed{seed}"
            if not (folder / EVAL).is_file():
                todo.append((config_s, folder))
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "grid.json", {"seeds": seeds,
                                     "runs": {n: to_dict(c) for n, c in configs.items()}})
    log(f"{out}: {len(configs) * len(seeds)} runs, {len(todo)} to train, {jobs} at a time")
    tic = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_run, c, f) for c, f in todo]
        for future in as_completed(futures):
            folder, mean = future.result()
            log(f"{folder}: evaluation mean return {mean:.2f} "
                f"({time.perf_counter() - tic:.0f} s so far)")
            sys.stdout.flush()
    runs = sorted(p.parent for p in (out / "runs").glob("*/seed*/config.json"))
    return write_report(runs, out)
