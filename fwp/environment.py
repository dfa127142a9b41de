"""What a run's numbers depend on beyond its config: device, CPU threads, torch, operator path.

A resumed run continues bit for bit only where all of these are unchanged: the thread count
changes how matrix products split their sums, another torch or CPU changes the kernels, and the
fused CPU kernels and the PyTorch forms of an operator round differently. Training records them
at every start (``runtime``) and says which changed on resume (``changes``), rather than letting
a run drift silently onto another path.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch


def runtime(device: torch.device | str = "cpu") -> dict[str, Any]:
    """``{"device", "threads", "torch", "operators"}`` of this process for tensors on ``device``;
    ``operators`` is :func:`fwp.ops.auto_modes` (builds the fused CPU kernels if not cached)."""
    from fwp.ops import auto_modes

    return {
        "device": str(torch.device(device)),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "operators": auto_modes(device),
    }


def describe(info: dict[str, Any]) -> str:
    """One line: ``cpu, 2 threads, torch 2.13.0+cpu, auto operators: srwm fused_cpu, ...``."""
    operators = ", ".join(f"{op} {mode}" for op, mode in info.get("operators", {}).items())
    return (f"{info['device']}, {info['threads']} thread{'s' * (info['threads'] != 1)}, "
            f"torch {info['torch']}" + (f", auto operators: {operators}" if operators else ""))


def changes(before: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """``["threads 1 → 2", "srwm fused_cpu → scan (...)"]``: what differs from ``before`` (a
    run saved before this was recorded gives ``[]``)."""
    if not before:
        return []
    out = [f"{key} {before[key]} → {now[key]}"
           for key in ("device", "threads", "torch") if key in before and before[key] != now[key]]
    old_ops, new_ops = before.get("operators", {}), now.get("operators", {})
    out += [f"{op} {old_ops[op]} → {new_ops.get(op)}"
            for op in old_ops if old_ops[op] != new_ops.get(op)]
    return out


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def warn_threads(threads: int, flag: str = "--threads") -> None:
    """One warning line when ``threads`` exceeds the usable cores: torch's threads then wait
    for each other at every parallel region, and a run can be many times slower."""
    cores = usable_cores()
    if threads > cores:
        print(f"fwp: warning: {flag} {threads} is more than the {cores} CPU core"
              f"{'s' * (cores != 1)} this process may use; the threads will wait on each other "
              f"and training runs slower (use {flag} {cores}, or 0 for torch's default)",
              file=sys.stderr, flush=True)
