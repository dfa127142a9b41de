"""The top-level ``fwp`` command: errors and interruptions end in one line and an exit code."""

from __future__ import annotations

import fwp.formal.cli as formal_cli
from fwp.cli import main


def test_a_ctrl_c_that_reaches_the_top_is_one_line_and_exit_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(formal_cli, "cmd_languages", interrupted)
    assert main(["formal", "languages"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("fwp: interrupted (Ctrl-C)") and err.count("\n") == 1
