"""Timing helpers shared by the benchmark scripts: warmed-up, repeated runs in one process, the
median with its spread, and the machine they ran on."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


def machine() -> str:
    """One line: CPU model, logical cores, torch threads, torch and Python versions (and the GPU
    when torch sees one)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"machine: {cpu}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch "
            f"threads, torch {torch.__version__}, Python {platform.python_version()}{gpu}")


@dataclass(frozen=True)
class Timing:
    """Seconds per call over the timed repeats (after warm-up)."""

    median: float
    low: float
    high: float

    def rate(self, items: float) -> str:
        """``items`` per second, median and range over the repeats: ``"1,234 (1,100–1,300)"``."""
        return f"{items / self.median:,.0f} ({items / self.high:,.0f}–{items / self.low:,.0f})"


def fwd_bwd(fn: Callable[[], tuple], inputs: list[torch.Tensor]) -> Callable[[], float]:
    """A callable timing one forward + backward of ``fn`` (its outputs summed into a loss)."""

    def once() -> float:
        for t in inputs:
            t.grad = None
        start = time.perf_counter()
        outputs = fn()
        loss = sum(o.float().sum() for o in outputs if o is not None and o.requires_grad)
        loss.backward()
        if inputs[0].is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return once


def warm_up(once: Callable[[], float], seconds: float = 0.3, calls: int = 2) -> None:
    """Run ``once`` at least ``calls`` times and for at least ``seconds``: allocations, lazy
    initialisation, kernel compilation and the thread pool's start are paid here, untimed."""
    start = time.perf_counter()
    done = 0
    while done < calls or time.perf_counter() - start < seconds:
        once()
        done += 1


def timed(once: Callable[[], float], repeats: int = 5) -> Timing:
    times = [once() for _ in range(repeats)]
    return Timing(statistics.median(times), min(times), max(times))


def time_fwd_bwd(fn: Callable[[], tuple], inputs: list[torch.Tensor], repeats: int = 5) -> Timing:
    """Forward + backward of ``fn``: warmed up, then ``repeats`` timed calls."""
    once = fwd_bwd(fn, inputs)
    warm_up(once)
    return timed(once, repeats)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
