"""benchmarks/ops.py: the machine first, every path warmed up before any timing, medians with
their range (timings themselves are never asserted)."""

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_every_path_is_warm_before_the_first_timing(monkeypatch, capsys):
    ops = load("ops")
    events = []

    def configurations(B, T, H, D):
        for op, mode in [("softmax attention", "sdpa"), ("srwm", "recurrent"), ("srwm", "scan")]:
            def once(op=op, mode=mode, T=T):
                events.append((T, op, mode))
                return 0.01 if mode != "scan" else 0.005
            yield op, mode, once

    timed_calls = []
    real_timed = ops.timed
    monkeypatch.setattr(ops, "configurations", configurations)
    monkeypatch.setattr(ops, "timed", lambda once, repeats: (timed_calls.append(len(events)),
                                                             real_timed(once, repeats))[1])
    monkeypatch.setattr(sys, "argv", ["ops.py", "--T", "3", "7", "--repeats", "3"])
    ops.main()
    first_timing = timed_calls[0]
    assert {e for e in events[:first_timing]} == {
        (T, op, mode) for T in (3, 7) for op, mode in
        [("softmax attention", "sdpa"), ("srwm", "recurrent"), ("srwm", "scan")]
    }
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("machine: ") and "torch threads" in out[0]
    assert "| 7 | srwm | scan | 22,400 (22,400–22,400) | 2.00 | 2.00 |" in out
