"""The sweep engine: many runs (configs × seeds) trained into one folder, resumable.

What every workflow's sweep shares: names that become folder names only when they are plain
names (:func:`check_name`); one sweep per folder at a time (``RunFolder(DIR).locked("sweep")``);
the grid file by path or name (:func:`grid_path`); the refusal of a run folder that holds a run
of another config (:func:`check_run_folders`); the runs still to train (:func:`pending_runs`);
running them one after another or in ``jobs`` worker processes (:func:`run_all`) with a stop
that lets the running ones save; and the time estimate (:class:`Estimate`). A workflow supplies
the grid, how to train and evaluate one run (a picklable function of one picklable task) and
what its report shows; the paired statistics are :mod:`fwp.stats`.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from fwp.config import to_dict
from fwp.errors import UserError
from fwp.runs.checkpoint import load_checkpoint
from fwp.runs.folder import CHECKPOINT, CONFIG
from fwp.runs.metrics import duration
from fwp.runs.policy import learning_differences


def check_name(name: str, what: str = "config name") -> str:
    """``name`` if it can be a folder name inside the sweep folder (not empty, no ``/`` or
    ``\\``, not ``.`` or ``..``, no NUL, valid UTF-8); else one line naming it."""
    bad = (not name or name in (".", "..") or any(c in name for c in "/\\\0")
           or name != name.strip())
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        bad = True
    if bad:
        raise UserError(f"{what} {name!r} cannot be a folder name inside the sweep folder: give "
                        f"a plain name (letters, digits, . _ - =, +), without / or ..")
    return name


def grid_path(grid: str, folder: Path) -> Path:
    """The grid file ``grid``: a path, or the name of a ``.toml`` file in ``folder``; else one
    line listing the names there."""
    path = Path(grid)
    if not path.is_file():
        path = folder / f"{grid}.toml"
    if not path.is_file():
        names = sorted(p.stem for p in folder.glob("*.toml"))
        raise UserError(f"no grid file {grid!r}; give a .toml path or one of {names}")
    return path


def check_run_folders(runs: Iterable[tuple[str, Path, Any]], fix: str) -> None:
    """Raise before any work if a run folder holds a run of another config than the one the
    sweep would train there (fields of resume policy ``runtime`` aside). ``runs``: (name,
    folder, config); ``fix``: what to do, for the message."""
    for name, folder, config in runs:
        path = Path(folder) / CONFIG
        if not path.is_file():
            continue
        try:
            saved = json.loads(path.read_text())
        except ValueError:
            raise UserError(f"{path} is damaged (not JSON); delete {folder} to retrain that "
                            f"run") from None
        changed = learning_differences(type(config), saved, to_dict(config))
        if changed:
            raise UserError(f"{folder} was trained with another config ({'; '.join(changed)}); "
                            f"the grid's config {name!r} changed: {fix}")


def pending_runs(runs: list[tuple[str, Path, Any]], result: str, jobs: int,
                 say: Callable[[str], None]) -> list[tuple[dict, str]]:
    """The runs (name, folder, config) whose folder holds no ``result`` file yet, as (config
    dict, folder) tasks for :func:`run_all`; says how many are finished and how many to train."""
    pending = [(to_dict(config), str(folder)) for _, folder, config in runs
               if not (Path(folder) / result).exists()]
    say(f"{len(runs)} runs, {len(runs) - len(pending)} finished, {len(pending)} to train "
        f"with {jobs} job(s)")
    return pending


def trained_steps(run: Path) -> int:
    """Optimiser steps in the run folder's checkpoint (0 if none): what a resumed run has done."""
    if not (run / CHECKPOINT).is_file():
        return 0
    return int(load_checkpoint(run / CHECKPOINT)["step"])


class Estimate:
    """The time a sweep has left, from the runs finished so far: training time per step and
    the time per run besides training (evaluation) apart, since a resumed run trains few steps
    but is evaluated in full. With ``group`` (run key → its config's name), a run whose config
    has finished runs is estimated at that config's own time per step (models of one sweep can
    differ fivefold), the others at the mean of all."""

    def __init__(self, steps_left: dict[Any, int], jobs: int,
                 group: Callable[[Any], Any] | None = None) -> None:
        self.steps_left, self.jobs = dict(steps_left), jobs
        self.group = group or (lambda key: None)
        self.total = len(steps_left)
        self.train_s = self.steps = self.other_s = 0.0
        self.by_group: dict[Any, list[float]] = {}  # group → [train seconds, steps]
        self.finished = 0
        self.started = time.perf_counter()

    def finish(self, key: Any, steps: int, train_s: float, total_s: float) -> str:
        """Count run ``key`` as done; ``N runs left, about T (elapsed T)``."""
        self.steps_left.pop(key)
        self.finished += 1
        self.train_s += train_s
        self.steps += steps
        self.other_s += total_s - train_s
        mine = self.by_group.setdefault(self.group(key), [0.0, 0.0])
        mine[0] += train_s
        mine[1] += steps
        per_step = self.train_s / max(1.0, self.steps)

        def step_time(run: Any) -> float:
            seconds, done = self.by_group.get(self.group(run), (0.0, 0.0))
            return seconds / done if done else per_step

        left = ((sum(n * step_time(run) for run, n in self.steps_left.items())
                 + len(self.steps_left) * self.other_s / self.finished)
                / min(self.jobs, max(1, len(self.steps_left))))
        runs = len(self.steps_left)
        return (f"{runs} run{'' if runs == 1 else 's'} left, about {duration(left)} (elapsed "
                f"{duration(time.perf_counter() - self.started)})")


def run_all(tasks: list[Any], work: Callable[[Any], Any], jobs: int,
            done: Callable[[Any], None], started: Callable[[list[Any]], None] | None = None
            ) -> None:
    """``work(task)`` for every task, in this process (``jobs`` 1) or in ``jobs`` spawned worker
    processes; ``done(result)`` in this process as each finishes. An exception (a stop) ends the
    sweep: no new task starts, and the running ones finish (saving their checkpoints)."""
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1 (got {jobs})")
    if jobs == 1:
        for task in tasks:
            if started is not None:
                started([task])
            done(work(task))
        return
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                               initargs=(stop,))
    try:
        futures = [pool.submit(_unless_stopped, work, task) for task in tasks]
        if started is not None:
            started(tasks[:jobs])
        for future in as_completed(futures):
            result = future.result()
            if not (isinstance(result, str) and result == _SKIPPED):
                done(result)
    except BaseException:
        # A stop (a signal to this process, or an error): the running runs finish their step,
        # save and stop (see fwp.runs.signals.stop_when), and the tasks already handed to a
        # worker's queue, which cancel_futures cannot reach, return without starting.
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_SKIPPED = "fwp: skipped, the sweep was stopped"


def _start_worker(stop: Any) -> None:
    from fwp.runs.signals import stop_when

    stop_when(stop.is_set)


def _unless_stopped(work: Callable[[Any], Any], task: Any) -> Any:
    """``work(task)`` in a worker, unless the sweep has been stopped meanwhile."""
    from fwp.runs.signals import stop_asked

    if stop_asked():
        return _SKIPPED
    return work(task)
