"""benchmarks/generation.py at toy size: the machine line, then the table with both ratios."""

from __future__ import annotations

import sys

from tests.test_benchmarks import load


def test_generation_benchmark_prints_ratios(monkeypatch, capsys):
    generation = load("generation")
    monkeypatch.setattr(sys, "argv", ["generation.py", "--lengths", "8", "32", "--tokens", "2",
                                      "--d-model", "16", "--heads", "2"])
    generation.main()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("machine: ")
    rows = [line for line in out if line.startswith("| 8 ") or line.startswith("| 32 ")]
    assert len(rows) == 2
    kv_over_fwp = [float(row.split("|")[-2]) for row in rows]
    assert kv_over_fwp[1] == 4 * kv_over_fwp[0]  # the cache grows with the context, the state not
