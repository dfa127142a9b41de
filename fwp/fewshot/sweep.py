"""``fwp fewshot sweep``: a grid of configs × seeds (:mod:`fwp.fewshot.grid`), trained,
evaluated and compared, through the sweep engine (:mod:`fwp.runs.sweep`).

Run ``(config, seed)`` trains in ``DIR/runs/<config>/seed<k>/`` through
:func:`fwp.fewshot.train.train`, then is evaluated on the same fixed test episodes at every
K_test of the grid (``DIR/runs/<config>/seed<k>/sweep_eval.json``, with each episode's accuracy
for paired comparisons). Started again with the same grid, a sweep skips evaluated runs, resumes
half-trained ones from their checkpoint, and refuses a run folder whose saved config differs from
the grid's. ``DIR/report.md`` and its plots are rewritten after every finished run
(:mod:`fwp.fewshot.sweep_report`). One sweep at a time per DIR.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fwp.config import to_dict, write_atomic
from fwp.errors import RunStopped
from fwp.fewshot.config import from_dict
from fwp.fewshot.grid import EVAL, GRID, Grid
from fwp.runs import RunFolder
from fwp.runs.sweep import Estimate, check_run_folders, duration, run_all, trained_steps


def _evaluated(run: Path, grid: Grid) -> bool:
    try:
        saved = json.loads((run / EVAL).read_text())
    except (OSError, ValueError):
        return False
    return (saved.get("episodes") == grid.test_episodes and saved.get("split") == grid.split
            and set(grid.k_test) <= {r["k_test"] for r in saved.get("results", [])})


@dataclass
class Task:
    """One run for a worker: train or resume it, then evaluate it."""

    name: str
    seed: int
    run: str
    config: dict
    k_test: list[int]
    episodes: int
    split: str
    threads: int


def run_task(task: Task) -> dict[str, Any]:
    """Train (or resume) ``task``'s run to its last step, evaluate its best checkpoint at every
    K_test and write ``sweep_eval.json``. Returns timings."""
    import torch

    from fwp.fewshot.evaluate import EVAL_SEED, evaluate, load_split, load_trained
    from fwp.fewshot.train import train

    torch.set_num_threads(task.threads)
    run, config = Path(task.run), from_dict(task.config)
    start_step = trained_steps(run)
    start = time.perf_counter()
    summary = train(config, run, resume=start_step > 0, progress=False)
    if summary["status"] != "finished":
        raise RunStopped(f"{task.name}/seed{task.seed} stopped at step {summary['step']} with "
                         "its checkpoint saved", summary["signal"])
    trained = time.perf_counter() - start
    model, source = load_trained(run, config, "best")
    dataset = load_split(config, task.split)
    results = [
        evaluate(model, dataset, config.data.n_way, k, task.episodes, seed=EVAL_SEED,
                 amp=config.amp, per_episode=True)
        for k in task.k_test
    ]
    write_atomic(run / EVAL, {
        "split": task.split, "checkpoint": source, "episodes": task.episodes, "n_query": 1,
        "seed": EVAL_SEED, "results": results,
    })
    return {"name": task.name, "seed": task.seed, "steps": summary["step"] - start_step,
            "train_s": trained, "total_s": time.perf_counter() - start}


def pending_tasks(grid: Grid, root: Path, per_job: int) -> tuple[list[Task], dict]:
    """The runs not evaluated yet, and the steps each has left."""
    pending, steps_left = [], {}
    for name, seed, run in grid.runs(root):
        if _evaluated(run, grid):
            continue
        config = grid.config(name, seed, per_job)
        pending.append(Task(name, seed, str(run), to_dict(config), grid.k_test,
                            grid.test_episodes, grid.split, per_job))
        steps_left[(name, seed)] = config.steps - trained_steps(run)
    return pending, steps_left


def sweep(
    grid: Grid, root: str | Path, *, jobs: int = 1, threads: int = 0,
    log: Callable[[str], None] = print, report: bool = True, only: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Train and evaluate every run of ``grid`` under ``root`` that is not evaluated yet (of
    the configs ``only``, when given: the saved grid and the report keep every config).

    ``jobs`` runs train at once (in separate processes when > 1), each with
    ``threads // jobs`` CPU threads (``threads`` 0: all cores). Returns the finished runs'
    timings.
    """
    root = Path(root)
    whole, grid = grid, grid.restricted(only) if only else grid
    per_job = max(1, (threads or os.cpu_count() or 1) // max(1, jobs))
    check_run_folders(
        [(name, run, grid.config(name, seed, per_job)) for name, seed, run in grid.runs(root)],
        "give it another name, use another sweep folder, or delete that run folder to retrain "
        "it")
    with RunFolder(root).locked("sweep"):
        write_atomic(root / GRID, whole.to_json())
        pending, steps_left = pending_tasks(grid, root, per_job)
        total = len(grid.configs) * len(grid.seeds)
        log(f"sweep {root}: {len(grid.configs)} configs × {len(grid.seeds)} seeds = {total} "
            f"runs, {total - len(pending)} done, {len(pending)} to run "
            f"({sum(steps_left.values())} steps) with {jobs} job(s) × {per_job} thread(s)")
        done: list[dict[str, Any]] = []
        estimate = Estimate(steps_left, jobs, group=lambda key: key[0])

        def finished(result: dict[str, Any]) -> None:
            done.append(result)
            left = estimate.finish((result["name"], result["seed"]), result["steps"],
                                   result["train_s"], result["total_s"])
            log(f"[{total - len(estimate.steps_left)}/{total}] {result['name']}/seed"
                f"{result['seed']}: {result['steps']} steps + evaluation in "
                f"{duration(result['total_s'])}; {left}")
            if report:
                _write_report(root, whole)

        def started(tasks: list[Task]) -> None:
            if jobs > 1:
                log(f"started {', '.join(f'{t.name}/seed{t.seed}' for t in tasks)}")
                return
            step = trained_steps(Path(tasks[0].run))
            log(f"start {tasks[0].name}/seed{tasks[0].seed}"
                + (f" (resuming at step {step})" if step else ""))

        try:
            run_all(pending, run_task, jobs, finished, started)
        except (RunStopped, KeyboardInterrupt) as stop:
            log(f"sweep stopped ({stop or 'Ctrl-C'}); run the same command to resume")
        if report and not pending:
            _write_report(root, whole)
    return done


def _write_report(root: Path, grid: Grid) -> None:
    from fwp.fewshot.sweep_report import write_report

    write_report(root, grid)
