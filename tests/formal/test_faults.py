"""Faults injected into formal-language runs: each gives one line naming the file and the fix."""

import json

import pytest
import torch

from fwp.cli import main
from tests.formal.test_train import TINY


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fwp: error: "), err
    return err[0]


def test_a_truncated_checkpoint_is_one_line_for_resume_and_eval(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["formal", "train", "--language", "parity", "--out", str(run), *TINY,
            "--eval-every", "2"]
    assert main(argv) == 0
    (run / "metrics.json").unlink()  # as if killed before the end
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert f"cannot read {run / 'checkpoint.pt'}" in line and "delete it and re-run" in line
    assert main(["formal", "eval", str(run)]) == 2
    assert f"cannot read {run / 'checkpoint.pt'}" in _one_error_line(capsys)
    (run / "checkpoint.pt").unlink()  # the fix the message gives
    assert main(argv) == 0


def _train(out, *extra):
    return main(["formal", "train", "--language", "parity", "--out", str(out), *TINY,
                 "--eval-every", "2", *extra])


def test_bad_bins_and_a_model_typo_are_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["formal", "train", "--language", "abab-star", "--out", str(out), *TINY,
                 "--bins", "5-7"]) == 2
    assert "no string with length in 5-7" in _one_error_line(capsys)
    assert _train(out, "--model", "lstmm") == 2
    assert "unknown --model 'lstmm'" in _one_error_line(capsys)
    assert not out.exists()
    assert _train(out) == 0  # the corrected command is not blocked


def test_a_run_that_failed_before_its_first_checkpoint_does_not_block(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "--lr", "inf") == 2
    assert "lower --lr" in _one_error_line(capsys)
    assert (out / "config.json").exists() and not (out / "checkpoint.pt").exists()
    assert _train(out, "--lr", "1e-3") == 0
    assert json.loads((out / "config.json").read_text())["lr"] == 1e-3


def test_a_finished_run_is_extended_by_more_epochs_as_if_trained_at_once(tmp_path, capsys):
    once, twice = tmp_path / "once", tmp_path / "twice"
    assert _train(once, "--epochs", "2") == 0
    assert _train(twice, "--epochs", "1") == 0
    capsys.readouterr()
    assert _train(twice, "--epochs", "2") == 0
    assert "changed on resume: epochs 1 → 2" in capsys.readouterr().out
    a = torch.load(once / "checkpoint.pt", weights_only=True)
    b = torch.load(twice / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert json.loads((twice / "config.json").read_text())["epochs"] == 2
    assert json.loads((twice / "metrics.json").read_text())["steps_run"] == 6
    assert _train(twice, "--epochs", "1") == 2
    assert "at step 6, past the 3 steps" in _one_error_line(capsys)
    assert _train(twice, "--epochs", "2", "--lr", "0.1") == 2
    assert "cannot change --lr 0.001 → 0.1 on resume" in _one_error_line(capsys)


def test_out_naming_a_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("mine\n")
    assert _train(path) == 2
    assert f"--out {path} is a file" in _one_error_line(capsys)
    assert path.read_text() == "mine\n"


@pytest.mark.slow
def test_a_full_disk_while_saving_is_one_line_and_the_same_command_resumes(tmp_path):
    """A cap on file size (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC) lets config.json
    through and stops checkpoint.pt: one line, no temporary file, and the same command trains
    the run once there is room."""
    from tests.limits import error_line, fwp

    out = tmp_path / "run"
    argv = ["formal", "train", "--language", "parity", "--out", str(out), *TINY,
            "--eval-every", "2"]
    line = error_line(fwp(*argv, max_file_bytes=4096))
    assert f"cannot write {out / 'best.pt'} (File too large)" in line
    assert "run the command again" in line
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert main(argv) == 0
    assert json.loads((out / "metrics.json").read_text())["steps_run"] == 3


# TINY without the flags of the published protocol
STREAM = [f for i, f in enumerate(TINY) if not {f, TINY[i - 1]} & {"--train-size", "--epochs"}]


@pytest.mark.parametrize("argv, message", [
    (("--steps", "30"), "--steps does nothing in this run: it counts the steps of --protocol "
                        "stream; the published protocol trains --epochs passes"),
    (("--protocol", "stream", "--steps", "2", "--epochs", "3"),
     "--epochs does nothing in this run: it sizes the published protocol's fixed data sets"),
    (("--protocol", "stream", "--steps", "2", "--train-size", "50"),
     "--train-size does nothing in this run"),
])
def test_a_flag_the_protocol_never_reads_is_refused(argv, message, tmp_path, capsys):
    """``--steps 30`` under the default published protocol trained its 93,900 steps."""
    out = tmp_path / "run"
    assert main(["formal", "train", "--language", "parity", "--out", str(out), *STREAM,
                 *argv]) == 2
    assert message in _one_error_line(capsys)
    assert not out.exists()


def test_the_flags_of_the_chosen_protocol_train(tmp_path):
    out = tmp_path / "run"
    assert main(["formal", "train", "--language", "parity", "--out", str(out), *STREAM,
                 "--protocol", "stream", "--steps", "2", "--eval-every", "2"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps_run"] == 2


@pytest.mark.parametrize("argv, message", [
    (("--threads", "-1"), "--threads must be ≥ 0 (got -1)"),
    (("--weight-decay", "-0.1"), "--weight-decay must be ≥ 0 (got -0.1)"),
    (("--adam-betas", "0.9", "1.0"), "--adam-betas needs two numbers in [0, 1), got [0.9, 1.0]"),
    (("--adam-betas", "-0.1", "0.9"), "--adam-betas needs two numbers in [0, 1)"),
    (("--grad-clip", "-1"), "--grad-clip must be ≥ 0 (got -1.0)"),
    (("--bins", "1-12", "13-20", "1-12"), "--bins names 1-12 twice; give each bin once"),
])
def test_optimiser_threads_and_bins_are_checked_before_any_work(argv, message, tmp_path,
                                                                 capsys):
    out = tmp_path / "run"
    assert _train(out, *argv) == 2
    assert message in _one_error_line(capsys)
    assert not out.exists()


def test_more_threads_than_cores_warns(capsys, monkeypatch):
    import argparse

    from fwp import environment
    from fwp.formal.config import add_config_flags, config_from_args

    monkeypatch.setattr(environment, "usable_cores", lambda: 2)
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    assert config_from_args(parser.parse_args(["--threads", "1000"])).threads == 1000
    assert capsys.readouterr().err.startswith("fwp: warning: --threads 1000 is more than the 2 "
                                              "CPU cores this process may use")


def test_a_model_label_given_twice_as_two_models_is_refused(tmp_path, capsys):
    assert main(["formal", "sweep", str(tmp_path / "sweep"), "--languages", "parity", "--models",
                 "x=srwm:n_beta=1", "x=srwm:n_beta=4", *TINY]) == 2
    assert "--models names 'x' twice, as two different models" in _one_error_line(capsys)
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("damage", [
    lambda text: text[: len(text) // 2],
    lambda text: "[]",
    lambda text: json.dumps({**json.loads(text), "train": [1, 2]}),
    lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "tests"}),
    lambda text: json.dumps({**json.loads(text), "eval_size": 3}),
], ids=["truncated", "a list", "numbers", "no tests", "another key"])
def test_a_damaged_data_set_cache_file_is_rebuilt(damage, tmp_path):
    from fwp.formal.data import published_data

    args = ("parity", "1-12", ["1-12", "13-20"], 12, 10, 20, 1234)
    fresh = published_data(*args)
    published_data(*args, cache_dir=tmp_path)
    (path,) = tmp_path.iterdir()
    path.write_text(damage(path.read_text()))
    again = published_data(*args, cache_dir=tmp_path)
    assert (again.train, again.valid, again._tests) == (fresh.train, fresh.valid, fresh._tests)
    stored = json.loads(path.read_text())
    assert stored["train"] == fresh.train and stored["tests"] == fresh._tests
