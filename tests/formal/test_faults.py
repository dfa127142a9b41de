"""Faults injected into formal-language runs: each gives one line naming the file and the fix."""

from fwp.cli import main
from tests.formal.test_train import TINY


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fwp: error: "), err
    return err[0]


def test_a_truncated_checkpoint_is_one_line_for_resume_and_eval(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["formal", "train", "--language", "parity", "--out", str(run), *TINY,
            "--steps", "4", "--eval-every", "2"]
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
