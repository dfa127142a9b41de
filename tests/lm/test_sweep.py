"""fwp lm sweep: equal-size widths, a resumable sweep, the report with paired differences."""

from __future__ import annotations

import pytest

from fwp.cli import main
from fwp.errors import UserError
from fwp.lm.sweep import expand, read_grid

GRID = """
seeds = [1, 2]
parameters = 30_000
compare = [["linear", "deltanet"]]
[set]
heads = 2
segment_len = 16
batch_size = 2
steps = 3
eval_every = 3
eval_tokens = 100
final_eval_tokens = 200
sample_tokens = 0
[models.linear]
layers = ["linear"]
[models.deltanet]
layers = ["deltanet"]
options = { "deltanet.feature_map" = "l2" }
"""


def test_the_shipped_grid_has_equal_sizes():
    models = expand(read_grid("layers"))
    counts = [n for _, _, n in models]
    assert len(models) == 10 and max(counts) / min(counts) < 1.05
    widths = {name: c.network.d_model for name, c, _ in models}
    assert widths["transformer"] == widths["transformer_nope"]  # positions add no parameter
    assert {c.network.d_model % 4 for _, c, _ in models} == {0}


def test_sweep_trains_resumes_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FWP_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "t.txt"
    data.write_text("alpha beta gamma delta\n" * 400)
    grid = tmp_path / "g.toml"
    grid.write_text(GRID.replace("[set]\n", f'[set]\ndata = "{data}"\n'))
    assert main(["lm", "sweep", str(tmp_path / "s"), "--grid", str(grid)]) == 0
    out = capsys.readouterr().out
    assert "| linear | linear |" in out and "4 runs, 0 finished, 4 to train" in out
    assert "Paired differences (reset state)" in out
    assert "](curves.png)" in (tmp_path / "s" / "report.md").read_text()
    assert (tmp_path / "s" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["lm", "sweep", str(tmp_path / "s"), "--grid", str(grid)]) == 0
    assert "4 runs, 4 finished, 0 to train" in capsys.readouterr().out
    assert main(["lm", "report", str(tmp_path / "s")]) == 0


def test_bad_grids_are_refused(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("seeds = [1]\n[set]\nnope = 1\n[models.a]\nlayers = ['lstm']\n")
    with pytest.raises(UserError, match="'nope' is not a field"):
        expand(read_grid(str(bad)))
    bad.write_text("seeds = [1]\n[models.a]\nlayer = ['lstm']\n")
    with pytest.raises(UserError, match="takes layers"):
        expand(read_grid(str(bad)))
    with pytest.raises(UserError, match="no grid file"):
        read_grid("missing")
