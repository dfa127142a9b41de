"""Training runs: resume equality, Ctrl-C and NaN handling, run-folder errors, eval, report."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch

from fwp.config import to_dict
from fwp.data import EpisodeSampler
from fwp.errors import UserError
from fwp.fewshot.checkpoint import (
    BEST,
    CHECKPOINT,
    CONFIG,
    METRICS,
    check_matches,
    load_checkpoint,
    read_config,
)
from fwp.fewshot.evaluate import EVAL_SEED, evaluate, load_split, load_trained
from fwp.fewshot.protocols import episodic as train_module
from fwp.fewshot.train import TrainingDiverged, lr_factor, train

from .conftest import tiny_config


def _parameters(run) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / CHECKPOINT)["model"]


def test_resume_equals_uninterrupted(tiny_root, tmp_path):
    """2n steps in one go, or n steps, stop, resume for n more: the same parameters, optimiser
    state and episode counter (bootstrapped loss, cosine schedule, dropout on)."""
    config = tiny_config(tiny_root, beta2=2.0, beta3=1.0, dropout=0.1, steps=6)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(config, whole, progress=False)
    first = train(config, parts, stop_after=3, progress=False)
    assert first["status"] == "stopped" and load_checkpoint(parts / CHECKPOINT)["step"] == 3
    second = train(config, parts, resume=True, progress=False)
    assert second["status"] == "finished" and second["step"] == 6
    a, b = load_checkpoint(whole / CHECKPOINT), load_checkpoint(parts / CHECKPOINT)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["sampler"] == b["sampler"] and a["best"] == b["best"]
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 6
    for run in (whole, parts):
        assert (run / BEST).is_file() and (run / CONFIG).is_file()
        lines = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
        assert {line["split"] for line in lines} == {"runtime", "train", "val"}
        runtime = [line for line in lines if line["split"] == "runtime"]
        assert runtime[0]["threads"] == 1 and runtime[0]["step"] == 0
    assert [line["step"] for line in runtime] == [0, 3]  # parts: the start and the resume


def test_ctrl_c_saves_a_checkpoint(tiny_root, tmp_path, monkeypatch):
    real = train_module.bootstrap_loss
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "bootstrap_loss", interrupted)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs as a background job
    summary = train(tiny_config(tiny_root, eval_every=100), tmp_path / "run", progress=False)
    assert summary["status"] == "interrupted" and summary["step"] == 2
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT)["step"] == 2
    assert signal.getsignal(signal.SIGINT) is before  # training's handler is gone again


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_root, tmp_path, monkeypatch):
    real = train_module.bootstrap_loss
    calls = []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss, parts = real(*args, **kwargs)
        return (loss * float("nan") if len(calls) == 4 else loss), parts

    monkeypatch.setattr(train_module, "bootstrap_loss", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="at step 4.*last good checkpoint"):
        train(tiny_config(tiny_root, eval_every=2), run, progress=False)
    checkpoint = load_checkpoint(run / CHECKPOINT)
    assert checkpoint["step"] == 2
    weights = [v for v in checkpoint["model"].values() if v.is_floating_point()]
    assert all(torch.isfinite(v).all() for v in weights)


def test_run_folder_errors(tiny_root, tmp_path):
    config = tiny_config(tiny_root, steps=2)
    with pytest.raises(UserError, match="cannot resume"):
        train(config, tmp_path / "none", resume=True, progress=False)
    run = tmp_path / "run"
    train(config, run, progress=False)
    with pytest.raises(UserError, match="already holds a run"):
        train(config, run, progress=False)
    with pytest.raises(UserError, match="run folder .*missing does not exist"):
        read_config(tmp_path / "missing")
    bigger = tiny_config(tiny_root, steps=2, d_model=32)
    with pytest.raises(UserError, match="does not match its config.*d_model"):
        load_trained(run, bigger)
    with pytest.raises(UserError, match="cannot change --d-model 16 → 32 on resume"):
        train(bigger, run, resume=True, progress=False)


def test_a_checkpoint_from_before_a_new_field_still_matches(tiny_root, tmp_path):
    config = tiny_config(tiny_root)
    saved = to_dict(config)
    del saved["network"]["layer_options"]  # the field did not exist when it was written
    check_matches({"config": saved}, config, tmp_path / "old.pt")
    saved["network"]["d_model"] = 99
    with pytest.raises(UserError, match="d_model: checkpoint 99, config 16"):
        check_matches({"config": saved}, config, tmp_path / "old.pt")


def test_evaluation_is_deterministic(tiny_root, tmp_path):
    config = tiny_config(tiny_root, steps=2)
    train(config, tmp_path / "run", progress=False)
    model, _ = load_trained(tmp_path / "run", config)
    dataset = load_split(config, "test")
    first = evaluate(model, dataset, 3, 2, episodes=12, n_query=2, batch_size=5)
    torch.manual_seed(123)
    second = evaluate(model, dataset, 3, 2, episodes=12, n_query=2, batch_size=12)
    assert first == second
    assert first["episodes"] == 12
    assert first["ci95"] == pytest.approx(1.96 * first["std"] / 12 ** 0.5)


def test_repeats_and_single_query(tiny_root, tmp_path):
    """Repeat r is episodes r·n … (r+1)·n − 1; the std over repeats is np.std of their means;
    one query per episode is the first of its shuffled queries."""
    config = tiny_config(tiny_root, steps=2)
    train(config, tmp_path / "run", progress=False)
    model, _ = load_trained(tmp_path / "run", config)
    dataset = load_split(config, "test")
    whole = evaluate(model, dataset, 3, 2, episodes=4, n_query=2, repeats=3, batch_size=5,
                     single_query=True)
    sampler = EpisodeSampler(dataset, 3, 2, n_query=2, seed=EVAL_SEED)
    model.eval()
    with torch.no_grad():
        batch = sampler.batch(range(12))
        logits = model.predict(batch.query_images[:, :1],
                               model.observe(batch.support_images, batch.support_labels))
    correct = (logits.argmax(-1)[:, 0] == batch.query_labels[:, 0]).double().numpy() * 100
    repeats = correct.reshape(3, 4).mean(1)
    assert whole["episodes"] == 12 and whole["repeats"] == 3
    assert whole["accuracy"] == pytest.approx(correct.mean())
    assert whole["repeat_accuracies"] == pytest.approx(repeats.tolist())
    assert whole["repeat_std"] == pytest.approx(float(np.std(repeats)))
    assert whole["ci95"] == pytest.approx(1.96 * correct.std(ddof=1) / 12 ** 0.5)
    assert "repeats" not in evaluate(model, dataset, 3, 2, episodes=4)


def test_schedules():
    config = tiny_config(".", steps=100, warmup=10, schedule="noam", d_model=16)
    peak = max(range(100), key=lambda s: lr_factor(config, s))
    assert peak == 9 and lr_factor(config, 9) == pytest.approx(16 ** -0.5 * 10 ** -0.5)
    config = tiny_config(".", steps=100, warmup=10, schedule="cosine")
    assert lr_factor(config, 9) == 1.0 and lr_factor(config, 99) == pytest.approx(0.0)


KILLED_RUN = """
import os, signal, sys
from pathlib import Path
from fwp.fewshot.train import train
from fwp.runs.metrics import MetricsLog
from tests.fewshot.conftest import tiny_config

real = MetricsLog.log

def log_then_die(self, step, split, values):
    real(self, step, split, values)
    if step == 5 and split == "train":  # logged, not yet saved: the checkpoint is at step 4
        os.kill(os.getpid(), signal.SIGKILL)

MetricsLog.log = log_then_die
train(tiny_config(sys.argv[1], steps=8, eval_every=2), Path(sys.argv[2]),
                   progress=False)
"""


@pytest.mark.slow
def test_resume_after_kill_9_logs_each_step_once(tiny_root, tmp_path, private_cache):
    """kill -9 between a log line and the next save: the resumed run drops the rows after the
    checkpoint's step (and TensorBoard's events), so metrics.jsonl is the uninterrupted run's."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    run, whole = tmp_path / "killed", tmp_path / "whole"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tiny_root), str(run)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert load_checkpoint(run / CHECKPOINT)["step"] == 4
    with (run / METRICS).open("a") as torn:
        torn.write('{"step": 6, "split": "tr')  # a write cut short by the kill
    config = tiny_config(tiny_root, steps=8, eval_every=2)
    train(config, run, resume=True, progress=False)
    train(config, whole, progress=False)

    def rows(folder):
        lines = [json.loads(line) for line in (folder / METRICS).read_text().splitlines()]
        return [(r["step"], r["split"], r.get("loss")) for r in lines if r["split"] != "runtime"]

    assert rows(run) == rows(whole)
    assert [r[0] for r in rows(run) if r[1] == "train"] == list(range(1, 9))


def test_resume_announces_a_changed_thread_count_and_operator_path(
    tiny_root, tmp_path, monkeypatch, capsys
):
    """The run records its threads and operator path; a resume on other ones says so (fault
    injected: the fused kernels become unavailable between the two processes)."""
    from contextlib import nullcontext

    from fwp.ops import _cpp
    from fwp.ops._dispatch import _warn_skipped

    run = tmp_path / "run"
    train(tiny_config(tiny_root, steps=4), run, stop_after=2, progress=False)
    first = load_checkpoint(run / CHECKPOINT)["runtime"]
    assert first["threads"] == 1 and "srwm" in first["operators"]
    assert "1 thread" in capsys.readouterr().out
    monkeypatch.setattr(_cpp, "_loaded", lambda: (None, "no C++ compiler found"))
    try:
        with pytest.warns(RuntimeWarning, match="cannot use 'fused_cpu'") if first[
            "operators"]["srwm"] == "fused_cpu" else nullcontext():
            train(tiny_config(tiny_root, steps=4, threads=2), run, resume=True, progress=False)
    finally:
        torch.set_num_threads(1)
        _warn_skipped.cache_clear()
    out = capsys.readouterr().out
    assert "changed on resume: threads 1 → 2" in out
    assert out.count("threads 1 → 2") == 1  # a config field that is also runtime: said once
    if first["operators"]["srwm"] == "fused_cpu":
        assert "srwm fused_cpu → scan (fused_cpu unavailable: no C++ compiler found)" in out


def test_the_batch_under_torchrun_is_announced(tiny_root):
    from fwp.fewshot.train import episodes_per_step

    config = tiny_config(tiny_root, batch_size=16)
    assert episodes_per_step(config, 1) == ""
    assert episodes_per_step(config, 4) == (
        "fwp: 4 processes × --batch-size 16 × --accumulate 1 = 64 episodes per optimiser step; "
        "for 16 per step as in one process, give --batch-size 4")
    assert "give" not in episodes_per_step(tiny_config(tiny_root, batch_size=6), 4)
