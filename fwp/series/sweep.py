"""``fwp series sweep``: a grid of configs × seeds on the run core's sweep engine, resumable.

A grid file (TOML; ``--grid NAME`` reads ``fwp/series/grids/NAME.toml``)::

    seeds = [1, 2, 3]
    [set]                              # fields of every run
    epochs = 30
    [vary]                             # every combination of these values
    model = ["ct_hebb", "ct_delta"]
    drop = [0.0, 0.3]
    [when."dataset=basic_motions"]     # fields of the runs where dataset is basic_motions
    batch_size = 16

Runs go to ``DIR/runs/<key=value,…>/seed<k>/`` (the varied fields in the name); finished runs
are skipped, stopped ones resume, so the same command continues a sweep. ``--set``,
``--vary`` and ``--seeds`` override the file (``--set`` also its ``when`` tables). The grid is
kept in ``DIR/grid.json``; ``DIR/report.md`` is written at the end (:mod:`fwp.series.report`).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from fwp.config import flat, parse_value, read_file, to_dict, write_atomic
from fwp.errors import UserError
from fwp.runs import RunFolder
from fwp.runs.sweep import (
    Estimate,
    check_name,
    check_run_folders,
    duration,
    grid_path,
    pending_runs,
    run_all,
)
from fwp.series.config import RunConfig, from_dict

GRIDS = Path(__file__).parent / "grids"


def read_grid(grid: str | None) -> dict[str, Any]:
    if grid is None:
        return {}
    path = grid_path(grid, GRIDS)
    data = read_file(path)
    unknown = set(data) - {"seeds", "set", "vary", "when"}
    if unknown:
        raise UserError(f"{path}: unknown tables {sorted(unknown)}; a grid has seeds, [set], "
                        f"[vary], [when.\"field=value\"]")
    return data


def expand(grid: dict[str, Any]) -> list[tuple[str, RunConfig]]:
    """(name, config) of every combination of ``grid['vary']`` over ``grid['set']``, with the
    ``when`` overrides; checked before anything runs."""
    fields = set(flat(RunConfig, RunConfig()))
    vary: dict[str, list] = grid.get("vary", {})
    for key in [*grid.get("set", {}), *grid.get("force", {}), *vary]:
        if key not in fields:
            raise UserError(f"grid: {key!r} is not a field of the series run config")
    out = []
    for values in itertools.product(*vary.values()):
        chosen = dict(zip(vary, values))
        data = {**grid.get("set", {}), **chosen}
        for condition, overrides in grid.get("when", {}).items():
            key, _, value = condition.partition("=")
            if key not in fields:
                raise UserError(f"grid: when.{condition!r} names no field of the run config")
            if str(data.get(key, flat(RunConfig, RunConfig())[key])) == value:
                data.update(overrides)
        data.update(grid.get("force", {}))  # --set wins over the file's tables
        config = from_dict(data, "grid")
        config.validate()
        name = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in chosen.items()) or "base"
        out.append((check_name(name), config))
    return out


def _work(task: tuple[dict, str]) -> tuple[str, dict]:
    from fwp.series.train import train

    config, out = task
    return out, train(from_dict(config), Path(out), log=None)


def sweep(out: Path, grid: dict[str, Any], jobs: int = 1,
          say=print) -> str:
    """Train every run of ``grid`` (:func:`expand` × seeds) into ``out``; returns the report."""
    from fwp.series.report import write_report
    from fwp.series.train import METRICS

    seeds = [int(s) for s in grid.get("seeds", [1])]
    if not seeds:
        raise UserError("grid: no seeds")
    runs = []
    for name, config in expand(grid):
        for seed in seeds:
            config_s = from_dict({**to_dict(config), "seed": seed})
            runs.append((name, out / "runs" / name / f"seed{seed}", config_s))
    check_run_folders(runs, "use a new sweep folder, or delete that run to retrain it")
    with RunFolder(out).locked("sweep"):
        write_atomic(out / "grid.json", {**grid, "seeds": seeds})
        pending = pending_runs(runs, METRICS, jobs, say)
        estimate = Estimate({folder: c["epochs"] for c, folder in pending}, jobs,
                            group=lambda folder: Path(folder).parent.name)

        def done(result: tuple[str, dict]) -> None:
            folder, metrics = result
            line = estimate.finish(folder, metrics["epochs"], metrics["train_seconds"],
                                   metrics["train_seconds"])
            say(f"{folder}: test {metrics['test']['accuracy']:.1f}% in "
                f"{duration(metrics['train_seconds'])}; {line}")

        run_all(pending, _work, jobs, done)
    return write_report(out)


def apply_overrides(grid: dict[str, Any], sets: list[str], varies: list[str],
                    seeds: list[int] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` and ``--vary KEY=V1,V2`` over the grid file's tables."""
    grid = {**grid, "force": {}, "vary": dict(grid.get("vary", {}))}
    for text in sets:
        key, sep, value = text.partition("=")
        if not sep:
            raise UserError(f"--set needs KEY=VALUE, got {text!r}")
        grid["force"][key] = parse_value(value)
        grid["vary"].pop(key, None)
    for text in varies:
        key, sep, values = text.partition("=")
        if not sep or not values:
            raise UserError(f"--vary needs KEY=V1,V2,…, got {text!r}")
        grid["vary"][key] = [parse_value(v) for v in values.split(",")]
        grid["force"].pop(key, None)
    if seeds is not None:
        grid["seeds"] = seeds
    return grid
