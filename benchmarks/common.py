"""Timing helpers shared by the benchmark scripts: medians of repeated runs, same process."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def time_fwd_bwd(fn: Callable[[], tuple], inputs: list[torch.Tensor], repeats: int = 3) -> float:
    """Median seconds of one forward + backward of ``fn`` (its outputs summed into a loss)."""

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

    once()  # warm-up: allocations, kernel compilation
    return statistics.median(once() for _ in range(repeats))


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
