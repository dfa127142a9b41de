"""Run folders written by fwp before the run core (tests/runs/old_folders, see its README)
resume with the current code and log what the old code logged without a stop."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fwp.cli import main

OLD = Path(__file__).parent / "old_folders"
EXPECTED = json.loads((OLD / "expected.json").read_text())


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FWP_CACHE", str(tmp_path / "cache"))


@pytest.mark.slow
def test_an_old_fewshot_sweep_resumes_its_stopped_runs(tmp_path, capsys):
    root = tmp_path / "sweep"
    shutil.copytree(OLD / "fewshot_sweep", root)
    assert main(["fewshot", "sweep", str(root), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 done, 2 to run (4 steps)" in out
    run = root / "runs" / "tiny+beta2=1" / "seed1"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if r["split"] in ("train", "val")]
    expected = EXPECTED["fewshot_sweep tiny+beta2=1 seed1, uninterrupted to step 4 "
                        "(metrics.jsonl rows)"]
    assert [(r["step"], r["split"]) for r in logged] == [(r["step"], r["split"]) for r in expected]
    for got, want in zip(logged, expected):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-6), got
        assert got["accuracy"] == pytest.approx(want["accuracy"], rel=1e-6), got
    report = (root / "report.md").read_text()
    assert "4 of 4 runs evaluated" in report and "### tiny+beta2=1 − tiny+beta2=0" in report


def test_an_old_formal_run_is_extended_as_if_trained_at_once(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(OLD / "formal_run", run)
    assert main(["formal", "train", "--config", str(run / "config.json"), "--steps", "6",
                 "--out", str(run)]) == 0
    assert "changed on resume: steps 4 → 6" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    expected = EXPECTED["formal_run extended to --steps 6"]
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in metrics["history"]]
    assert history == expected["history"]
    assert metrics["bins"] == expected["bins"] and metrics["valid"] == expected["valid"]
    # the old checkpoint held the selected model; it is best.pt now, and eval reads it
    assert (run / "best.pt").is_file()
    assert main(["formal", "eval", str(run)]) == 0
