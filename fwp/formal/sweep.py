"""A models × languages grid of runs, resumable, followed by the report.

Layout: ``DIR/sweep.json`` (grid and base config), ``DIR/runs/<language>/<model>/`` (one run
folder per cell, see :mod:`fwp.formal.train`), ``DIR/report.md`` and ``DIR/heatmap.png``.
A cell with ``metrics.json`` is skipped on re-run; an unfinished one resumes from its checkpoint.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from fwp.errors import UserError
from fwp.formal.config import RunConfig, from_dict, to_dict
from fwp.formal.languages import get_language
from fwp.formal.report import RUNS, SWEEP, write_report
from fwp.formal.train import METRICS, config_changes, train, write_json


def cell_dir(sweep_dir: Path, language: str, model: str) -> Path:
    return Path(sweep_dir) / RUNS / language / model


def cell_config(base: RunConfig, language: str, model: str) -> RunConfig:
    config = copy.deepcopy(base)
    config.language = language
    config.network.model = model
    return config


def _run_cell(config_dict: dict, out: str) -> tuple[str, str, str]:
    """Train one cell (in this or a worker process); its log goes to ``out/train.log``.

    A cell that fails with a :class:`UserError` (e.g. a NaN loss) is logged and left
    unfinished, so that the other cells still run and a re-run retries it.
    """
    config = from_dict(RunConfig, config_dict)
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out) / "train.log", "a") as logfile:
        def log(message: str) -> None:
            logfile.write(message + "\n")
            logfile.flush()

        try:
            metrics = train(config, Path(out), log=log)
        except UserError as error:
            log(f"failed: {error}")
            return config.language, config.network.model, f"failed: {error}"
    last_bin = list(metrics["bins"])[-1]
    accuracy = metrics["bins"][last_bin]["seq_acc"]
    return config.language, config.network.model, f"{accuracy:.1f}% on lengths {last_bin}"


def sweep(base: RunConfig, languages: list[str], models: list[str], out: Path,
          jobs: int = 1, progress: bool = True) -> str:
    """Run every (language, model) cell not finished yet, then write the report; returns it."""
    out = Path(out)
    if not languages or not models:
        raise UserError("a sweep needs at least one --languages and one --models entry")
    languages = list(dict.fromkeys(get_language(name).name for name in languages))
    models = list(dict.fromkeys(models))
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1 (got {jobs})")
    from fwp.formal.model import available_models

    registered = available_models()
    unknown = [m for m in models if m not in registered]
    if unknown:
        raise UserError(
            f"unknown model(s) {', '.join(unknown)}; registered layers: "
            f"{', '.join(registered) or 'none (fwp.layers missing)'}"
        )
    cells = [(lang, model) for lang in languages for model in models]
    conflicts = {
        f"{lang} × {model}": changed
        for lang, model in cells
        if (changed := config_changes(cell_config(base, lang, model), cell_dir(out, lang, model)))
    }
    if conflicts:
        (cell, changed), *_ = conflicts.items()
        raise UserError(
            f"{out} already has runs with another config ({len(conflicts)} cells, e.g. {cell}: "
            f"{', '.join(changed)}); repeat the original flags, or sweep into a new --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    info_path = out / SWEEP
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info["languages"] = list(dict.fromkeys(info.get("languages", []) + languages))
    info["models"] = list(dict.fromkeys(info.get("models", []) + models))
    info["base"] = to_dict(base)  # every cell's config, but for its language and model
    del info["base"]["language"], info["base"]["network"]["model"]
    write_json(info_path, info)

    todo = [c for c in cells if not (cell_dir(out, *c) / METRICS).exists()]
    start = time.perf_counter()
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="sweep", unit="run",
               disable=not progress, dynamic_ncols=True)
    if jobs == 1:
        for lang, model in todo:
            bar.set_postfix_str(f"{lang} × {model}")
            _report_done(bar, _run_cell(to_dict(cell_config(base, lang, model)),
                                        str(cell_dir(out, lang, model))))
    elif todo:
        # Spawned workers, one torch thread each unless --threads says otherwise.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = []
            for lang, model in todo:
                config = cell_config(base, lang, model)
                config.threads = config.threads or 1
                futures.append(pool.submit(_run_cell, to_dict(config),
                                           str(cell_dir(out, lang, model))))
            for future in as_completed(futures):
                _report_done(bar, future.result())
    bar.close()

    info = json.loads(info_path.read_text())
    if todo:
        info["wall_seconds"] = info.get("wall_seconds", 0.0) + time.perf_counter() - start
    write_json(info_path, info)
    _, _, text = write_report(out)
    return text


def _report_done(bar: tqdm, result: tuple[str, str, str]) -> None:
    language, model, outcome = result
    bar.update(1)
    bar.write(f"{language} × {model}: {outcome}")
