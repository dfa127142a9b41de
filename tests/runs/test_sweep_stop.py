"""A sweep stopped in its parent process stops its workers' runs after their step (checkpoint
saved) and starts none of the runs still queued."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fwp.runs.sweep import run_all


def _run(task: tuple[str, int]) -> str:
    """A stand-in for a training run (in a worker): one 20 ms step at a time, stopping as the
    run core's loop does when its StopRequest is asked."""
    from fwp.runs.signals import StopRequest

    folder, steps = Path(task[0]), task[1]
    folder.mkdir(parents=True)
    (folder / "started").touch()
    if steps == 1:  # the quick run ends only once the other worker runs a long one (its
        # process may still be starting under load: without this wait, none would have begun)
        deadline = time.monotonic() + 120
        while not (folder.parent / "long0" / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    with StopRequest(lambda _: None) as stop:
        for step in range(steps):
            if stop.asked():
                (folder / "stopped").write_text(str(step))
                return str(folder)
            time.sleep(0.02)
    (folder / "finished").touch()
    return str(folder)


def test_a_stopped_sweep_stops_its_running_runs_and_starts_no_queued_one(tmp_path):
    tasks = [(str(tmp_path / "quick"), 1)] + [(str(tmp_path / f"long{i}"), 3000) for i in range(4)]

    def done(result: str) -> None:
        raise RuntimeError("stopped by the test")  # as a signal to the sweep's process would

    with pytest.raises(RuntimeError, match="stopped by the test"):
        run_all(tasks, _run, 2, done)
    assert (tmp_path / "quick" / "finished").is_file()
    longs = [tmp_path / f"long{i}" for i in range(4)]
    assert not any((f / "finished").exists() for f in longs)  # 60 s each if not stopped
    started = [f for f in longs if (f / "started").exists()]
    assert started and all((f / "stopped").exists() for f in started)
    assert not (longs[-1] / "started").exists()  # never handed to a worker


def test_the_time_left_uses_each_configs_own_time_per_step():
    from fwp.runs.sweep import Estimate

    runs = {("slow", 1): 100, ("fast", 1): 100, ("fast", 2): 100, ("fast", 3): 100}
    estimate = Estimate(runs, jobs=1, group=lambda key: key[0])
    # slow: 5 s per step, fast: 1 s per step, no time besides training
    assert "3 runs left, about 25m00s" in estimate.finish(("slow", 1), 100, 500.0, 500.0)
    assert "2 runs left, about 3m20s" in estimate.finish(("fast", 1), 100, 100.0, 100.0)
    plain = Estimate(runs, jobs=1)  # without groups: the mean of all, 3 s per step
    plain.finish(("slow", 1), 100, 500.0, 500.0)
    assert "2 runs left, about 10m00s" in plain.finish(("fast", 1), 100, 100.0, 100.0)


def test_a_resumed_run_counts_only_the_steps_it_has_left(tmp_path, monkeypatch):
    import fwp.rl.sweep as rl_sweep
    from fwp.runs import CHECKPOINT, save_checkpoint
    from fwp.runs.sweep import trained_steps

    assert trained_steps(tmp_path) == 0
    save_checkpoint(tmp_path / CHECKPOINT, {"model": {}, "step": 7})
    assert trained_steps(tmp_path) == 7

    seen = {}

    class Recorded(rl_sweep.Estimate):
        def __init__(self, steps_left, jobs, group=None):
            seen.update(steps_left)
            raise RuntimeError("seen")

    monkeypatch.setattr(rl_sweep, "Estimate", Recorded)
    monkeypatch.setattr(rl_sweep, "trained_steps", lambda run: 2 if run.name == "seed1" else 0)
    grid = tmp_path / "grid.toml"
    grid.write_text("seeds = [1, 2]\n[runs.small]\nframes = 640\nn_envs = 4\nrollout = 16\n")
    with pytest.raises(RuntimeError, match="seen"):
        rl_sweep.sweep(grid, tmp_path / "study", log=None)
    left = {Path(folder).name: frames for folder, frames in seen.items()}
    assert left == {"seed1": 640 - 2 * 4 * 16, "seed2": 640}  # frames, less a checkpoint's
