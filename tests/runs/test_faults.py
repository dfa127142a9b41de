"""Faults injected into the run core (issue 22): a checkpoint that would run code, sweep names
that leave their folder, two writers on one folder, SIGTERM, and output paths that cannot be
written. Each is one line before any work, and leaves nothing behind."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

from fwp.cli import main
from fwp.config import WriteFailed, write_atomic
from fwp.errors import UserError
from fwp.runs import RunFolder, load_checkpoint
from fwp.runs.folder import check_output_path
from fwp.runs.sweep import check_name
from tests.formal.test_train import TINY


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fwp: error: "), err
    return err[0]


def _formal(out, *extra) -> int:
    return main(["formal", "train", "--language", "parity", "--out", str(out), *TINY,
                 "--eval-every", "2", *extra])


class Payload:
    """Unpickling this runs code (what a hostile checkpoint would carry)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_carrying_code_is_refused_and_the_code_never_runs(tmp_path, capsys):
    run = tmp_path / "run"
    assert _formal(run) == 0
    marker = tmp_path / "pwned"
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["extra"] = Payload(marker)
    torch.save(state, run / "checkpoint.pt")
    (run / "metrics.json").unlink()  # so that the same command resumes from it
    capsys.readouterr()
    assert _formal(run) == 2
    line = _one_error_line(capsys)
    assert "holds Python objects other than tensors" in line and "delete it" in line
    assert main(["formal", "eval", str(run)]) == 2
    assert "cannot read" in _one_error_line(capsys)
    with pytest.raises(UserError, match="will not run"):
        load_checkpoint(run / "checkpoint.pt")
    assert not marker.exists()


def test_what_fwp_saves_loads_with_weights_only(tmp_path):
    assert _formal(tmp_path / "run") == 0
    for name in ("checkpoint.pt", "best.pt"):
        torch.load(tmp_path / "run" / name, weights_only=True, map_location="cpu")


@pytest.mark.parametrize("name", ["../../escape", "/tmp/absolute", "..", "a/b"])
def test_sweep_names_that_leave_the_folder_are_refused(tmp_path, name):
    from fwp.fewshot.grid import build_grid
    from fwp.formal.sweep import ModelSpec

    with pytest.raises(UserError, match="cannot be a folder name inside the sweep folder"):
        build_grid({"configs": [{"name": name, "preset": "demo"}]})
    if name:
        with pytest.raises(UserError, match="cannot be a folder name"):
            ModelSpec.parse(f"{name}=lstm")
    assert not (tmp_path.parent / "escape").exists()
    with pytest.raises(UserError, match="cannot be a folder name"):
        check_name("")


def test_a_formal_sweep_label_that_escapes_writes_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["formal", "sweep", str(out), "--languages", "parity", "--models",
                 "../../x=lstm", *TINY]) == 2
    assert "cannot be a folder name" in _one_error_line(capsys)
    assert not out.exists() and not (tmp_path / "x").exists()


def test_a_second_writer_is_refused_with_who_holds_the_folder(tmp_path, capsys):
    run = tmp_path / "run"
    with RunFolder(run).locked():
        assert _formal(run) == 2
        line = _one_error_line(capsys)
        assert f"in use by another fwp process (pid {os.getpid()}" in line
        assert main(["formal", "sweep", str(run), "--languages", "parity", "--models", "lstm",
                     *TINY]) == 2
        assert "in use by another fwp process" in _one_error_line(capsys)
    assert _formal(run) == 0  # released (a killed holder releases it too: the kernel does)


def test_two_fewshot_sweeps_in_one_folder(tmp_path):
    from fwp.fewshot.grid import build_grid
    from fwp.fewshot.sweep import sweep

    grid = build_grid({"configs": [{"preset": "demo"}], "seeds": [1]})
    with RunFolder(tmp_path).locked("sweep"):
        with pytest.raises(UserError, match="in use by another fwp process"):
            sweep(grid, tmp_path, log=lambda _: None)


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    code = ("import sys, time; from fwp.runs import RunFolder\n"
            "with RunFolder(sys.argv[1]).locked():\n"
            "    print('held', flush=True); time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")],
                              stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match=f"pid {holder.pid}"):
        with RunFolder(tmp_path / "run").locked():
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    time.sleep(0.1)
    with RunFolder(tmp_path / "run").locked():
        pass


@pytest.mark.parametrize("kind", ["file", "under a file", "dangling symlink", "not utf-8",
                                  "read-only"])
def test_an_output_path_that_cannot_be_written_is_one_line_before_any_work(
        tmp_path, capsys, monkeypatch, kind):
    target = tmp_path / "out"
    if kind == "file":
        target.write_text("mine\n")
        expected = "is a file, not a folder"
    elif kind == "under a file":
        (tmp_path / "notes").write_text("mine\n")
        target = tmp_path / "notes" / "run"
        expected = "lies under"
    elif kind == "dangling symlink":
        target.symlink_to(tmp_path / "gone")
        expected = "symbolic link to"
    elif kind == "not utf-8":
        target = Path(os.fsdecode(bytes(tmp_path) + b"/run\xff"))
        expected = "not valid UTF-8"
    else:  # root ignores permissions: the check is what the test can reach
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path
                            else real(p, mode))
        expected = "is not writable (read-only)"
    before = sorted(p.name for p in tmp_path.iterdir())
    commands = [
        ["formal", "train", "--language", "parity", "--out", str(target), *TINY],
        ["formal", "sweep", str(target), "--languages", "parity", "--models", "lstm",
         *TINY],
        ["fewshot", "sweep", str(target), "--preset", "demo", "--seeds", "1"],
        ["fewshot", "train", "--preset", "demo", "--out", str(target)],
        ["fewshot", "report", str(tmp_path), "--out", str(target)],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        assert expected in _one_error_line(capsys), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_read_only_folder_keeps_the_real_error_of_a_failed_write(tmp_path, monkeypatch):
    """The clean-up of the temporary file fails too in a read-only folder; the error names the
    write, not the clean-up."""
    real_open = open

    def refused(path, *args, **kwargs):
        if str(path).endswith(".tmp"):
            raise PermissionError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    def unlink(self, missing_ok=False):
        raise PermissionError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr("builtins.open", refused)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(WriteFailed, match=r"cannot write .*x\.json \(Read-only file system\)"):
        write_atomic(tmp_path / "x.json", {"a": 1})


def test_check_output_path_accepts_what_can_be_written(tmp_path):
    check_output_path(tmp_path / "new" / "deeper")
    check_output_path(tmp_path)
    (tmp_path / "f.png").write_bytes(b"")
    check_output_path(tmp_path / "f.png", folder=False)
    with pytest.raises(UserError, match="is a folder, not a file"):
        check_output_path(tmp_path, folder=False)
    assert json.dumps({"ok": True})
