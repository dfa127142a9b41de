"""``fwp lm sweep``: models of equal parameter count × seeds on the run core's sweep engine.

A grid file (TOML; ``--grid NAME`` reads ``fwp/lm/grids/NAME.toml``)::

    seeds = [1, 2, 3]
    parameters = 400_000                  # every model's width is chosen to come closest
    compare = [["linear", "deltanet"]]    # paired differences (second − first) in the report
    [set]                                 # fields of every run (by name: heads = 4)
    steps = 3000
    [models.deltanet]                     # one run config per model: its layers and options
    layers = ["deltanet", "deltanet"]
    [models.deltanet_beta2]
    layers = ["deltanet", "deltanet"]
    options = { "deltanet.allow_negative_eigenvalues" = true }

The width d_model (a multiple of the heads, feed-forward 4·d_model) of each model is the one
whose parameter count is closest to ``parameters``; the table is printed before anything runs.
Runs go to ``DIR/runs/<model>/seed<k>/``; finished runs (``final.json``) are skipped and stopped
ones resume, so the same command continues a sweep. ``DIR/report.md`` is written at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fwp.config import nest, read_file, to_dict, write_atomic
from fwp.errors import UserError
from fwp.lm.config import LMConfig, from_dict
from fwp.lm.model import FwpLM, split_layer_options
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
TABLES = {"seeds", "parameters", "compare", "set", "models"}


def read_grid(grid: str) -> dict[str, Any]:
    path = grid_path(grid, GRIDS)
    data = read_file(path)
    unknown = set(data) - TABLES
    if unknown or not data.get("models"):
        raise UserError(f"{path}: a grid has {sorted(TABLES)} with at least one [models.NAME]; "
                        f"unknown: {sorted(unknown)}")
    return data


def count_parameters(config: LMConfig, vocab_size: int = 256) -> int:
    return FwpLM(config.spec(vocab_size)).n_parameters()


def equal_size(base: dict[str, Any], layers: list[str], options: dict[str, Any],
               target: int) -> tuple[LMConfig, int]:
    """The config of ``layers`` whose d_model (a multiple of the heads, d_ff = 4·d_model) gives
    the parameter count closest to ``target``, and that count."""
    best: tuple[int, LMConfig, int] | None = None
    heads = from_dict(base).network.heads
    for width in range(heads, 1025, heads):
        data = {**base, "network": {**base.get("network", {}), "layers": layers,
                                    "options": options, "d_model": width, "d_ff": 4 * width}}
        config = from_dict(data, "grid")
        n = count_parameters(config)
        if best is None or abs(n - target) < abs(best[2] - target):
            best = (width, config, n)
        if n > target:
            break
    assert best is not None
    return best[1], best[2]


def expand(grid: dict[str, Any]) -> list[tuple[str, LMConfig, int]]:
    """(model name, config, parameter count) of every model of the grid, checked."""
    for key in grid.get("set", {}):
        if key in ("layers", "options", "d_model", "d_ff"):
            raise UserError(f"grid: [set] {key!r} is not a field of the lm run config that a "
                            f"grid sets (layers and options go in [models.NAME], widths are "
                            f"chosen for equal size)")
    base = nest(LMConfig, grid.get("set", {}), "grid: [set]")
    out = []
    for name, model in grid["models"].items():
        check_name(name, "model name")
        unknown = set(model) - {"layers", "options"}
        if unknown or "layers" not in model:
            raise UserError(f"grid: [models.{name}] takes layers (and options), not "
                            f"{sorted(unknown)}")
        split_layer_options(model.get("options", {}))
        config, n = equal_size(base, list(model["layers"]), dict(model.get("options", {})),
                               int(grid.get("parameters", 400_000)))
        config.validate()
        out.append((name, config, n))
    return out


def parameter_table(models: list[tuple[str, LMConfig, int]]) -> str:
    lines = ["| model | layers | d_model | parameters |", "|---|---|---:|---:|"]
    for name, config, n in models:
        lines.append(f"| {name} | {','.join(config.network.layers)} | "
                     f"{config.network.d_model} | {n:,} |")
    return "\n".join(lines)


def _work(task: tuple[dict, str]) -> tuple[str, dict]:
    from fwp.lm.train import train

    config, out = task
    return out, train(from_dict(config), Path(out), say=lambda line: None)


def sweep(out: Path, grid: dict[str, Any], jobs: int = 1, say=print) -> str:  # noqa: ANN001
    """Train every model × seed of ``grid`` into ``out``; returns the report."""
    from fwp.lm.report import write_report
    from fwp.lm.train import FINAL

    seeds = [int(s) for s in grid.get("seeds", [1])]
    models = expand(grid)
    say(parameter_table(models))
    runs = [(name, out / "runs" / name / f"seed{seed}",
             from_dict({**to_dict(config), "seed": seed}))
            for name, config, _ in models for seed in seeds]
    check_run_folders(runs, "use a new sweep folder, or delete that run to retrain it")
    with RunFolder(out).locked("sweep"):
        write_atomic(out / "grid.json", {**grid, "seeds": seeds,
                                         "widths": {n: c.network.d_model for n, c, _ in models},
                                         "counts": {n: k for n, _, k in models}})
        pending = pending_runs(runs, FINAL, jobs, say)
        estimate = Estimate({folder: c["steps"] - trained_steps(Path(folder))
                             for c, folder in pending}, jobs,
                            group=lambda folder: Path(folder).parent.name)

        def done(result: tuple[str, dict]) -> None:
            folder, final = result
            bpb = ", ".join(f"{mode} {m['bits_per_byte']:.3f}"
                            for mode, m in final["valid"].items())
            line = estimate.finish(folder, final["steps"], final["train_seconds"],
                                   final["train_seconds"])
            say(f"{folder}: valid bits/byte {bpb} in {duration(final['train_seconds'])}; {line}")

        run_all(pending, _work, jobs, done)
    return write_report(out)
