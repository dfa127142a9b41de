"""``fwp series`` train / eval / sweep / report on a tiny built-in task."""

import json

import pytest

from fwp.cli import main
from fwp.errors import UserError
from fwp.series.config import RunConfig
from fwp.series.sweep import apply_overrides, expand, read_grid
from fwp.series.train import METRICS, train

pytest.importorskip("torchdiffeq")

TINY = {"dataset": "cue_recall", "data_options": {"series": 24, "length": 8, "classes": 2},
        "epochs": 2, "batch_size": 8, "d_model": 8, "heads": 2, "d_ff": 16, "threads": 1,
        "drop": 0.3}


def test_train_writes_metrics_resumes_and_evaluates(tmp_path, capsys):
    config = RunConfig(**{**TINY, "model": "ct_delta"})
    metrics = train(config, tmp_path / "run", log=None)
    assert set(metrics["test"]) == {"accuracy", "loss", "auroc"}  # two classes: AUROC too
    assert (tmp_path / "run" / METRICS).exists() and (tmp_path / "run" / "best.pt").exists()
    assert train(config, tmp_path / "run", log=None) == json.loads(
        (tmp_path / "run" / METRICS).read_text())
    assert main(["series", "eval", str(tmp_path / "run"), "--split", "valid"]) == 0
    assert "valid: accuracy" in capsys.readouterr().out


def test_cli_train_and_refusals(tmp_path, capsys):
    args = ["series", "train", "--dataset", "cue_recall", "--data-option", "series=24",
            "--data-option", "length=8", "--model", "gru_dt", "--epochs", "1", "--d-model", "8",
            "--out", str(tmp_path / "gru")]
    assert main(args) == 0
    assert "test: accuracy" in capsys.readouterr().out
    assert main(["series", "train", "--dataset", "basic_motions", "--data-root", "x"]) == 2
    assert "--data-root does not apply" in capsys.readouterr().err
    assert main(["series", "train", "--drop", "1"]) == 2
    assert main(["series", "train", "--model", "deltanet", "--interpolation", "cubic"]) == 2
    assert "cubic is the path" in capsys.readouterr().err


def test_sweep_is_resumable_and_reports_pairs(tmp_path):
    grid = apply_overrides({"set": TINY, "seeds": [1, 2]}, ["epochs=1"],
                           ["model=ct_hebb,ncde,deltanet"], None)
    out = tmp_path / "sweep"
    lines = []
    text = __import__("fwp.series.sweep", fromlist=["sweep"]).sweep(out, grid, say=lines.append)
    assert "6 runs, 0 finished, 6 to train" in lines[0]
    assert "| ct_hebb |" in text and "| ct_hebb | ncde | 2 |" in text
    assert "](accuracy.png)" in text and (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    again = []
    __import__("fwp.series.sweep", fromlist=["sweep"]).sweep(out, grid, say=again.append)
    assert "6 runs, 6 finished, 0 to train" in again[0]
    assert main(["series", "report", str(out)]) == 0


def test_grid_files_and_overrides_are_checked():
    runs = expand(read_grid("continuous"))
    assert len(runs) == 40 and len(read_grid("continuous")["seeds"]) == 3
    motions = dict(runs)["dataset=basic_motions,model=ct_delta,drop=0.3"]
    assert motions.batch_size == 8 and motions.epochs == 40
    forced = dict(expand(apply_overrides(read_grid("continuous"), ["epochs=1"], [], [1])))
    assert {c.epochs for c in forced.values()} == {1}
    with pytest.raises(UserError, match="not a field"):
        expand({"vary": {"modle": ["ct_delta"]}})
    with pytest.raises(UserError, match="no grid file"):
        read_grid("nope")
