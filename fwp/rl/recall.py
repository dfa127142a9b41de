"""Online supervised learning with RTRL against truncated BPTT: delayed recall, and the memory
and time per step of both as the sequence grows.

Delayed recall (our task): an episode shows one of ``symbols`` cues with a store flag, then
``delay`` steps of random distractors, then a recall flag; the target at the recall step is the
cue (chance 1/symbols). Episodes follow each other in ``batch`` parallel streams; the state is
reset at every episode start. Both learners run the stream in segments of ``segment`` steps and
take one optimiser step per segment on the recall losses inside it; they differ only in the
recurrent weights' gradient: RTRL carries the sensitivities across segments (exact gradient of
every recall loss through the whole episode), truncated BPTT stops at the segment start. With
``delay ≥ segment`` no truncated gradient ever links a recall to its cue.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fwp.errors import UserError
from fwp.rl.rtrl import ELSTM, SumFWP


@dataclass
class RecallTask:
    symbols: int = 4
    delay: int = 20
    distractors: int = 4

    @property
    def length(self) -> int:
        return self.delay + 2

    @property
    def d_in(self) -> int:
        return self.symbols + self.distractors + 2

    def stream(self, batch: int, steps: int, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x ``[B, steps, d_in]``, target ``[B, steps]`` (−1: no loss), start ``[B, steps]``."""
        L, S = self.length, self.symbols
        episodes = -(-steps // L)
        x = torch.zeros(batch, episodes, L, self.d_in)
        cue = torch.randint(S, (batch, episodes), generator=generator)
        noise = torch.randint(self.distractors, (batch, episodes, self.delay), generator=generator)
        x[:, :, 0].scatter_(-1, cue[..., None], 1.0)
        x[:, :, 0, -2] = 1.0
        x[:, :, 1:-1].scatter_(-1, (S + noise)[..., None], 1.0)
        x[:, :, -1, -1] = 1.0
        target = torch.full((batch, episodes, L), -1, dtype=torch.long)
        target[:, :, -1] = cue
        start = torch.zeros(batch, episodes, L, dtype=torch.bool)
        start[:, :, 0] = True
        flat = lambda t: t.flatten(1, 2)[:, :steps]  # noqa: E731
        return flat(x), flat(target), flat(start)


def build_cell(cell: str, d_in: int, width: int, heads: int = 4) -> ELSTM | SumFWP:
    if cell == "elstm":
        return ELSTM(d_in, width)
    if cell == "fwp_sum":
        return SumFWP(d_in, heads, width // heads)
    raise UserError(f"unknown cell {cell!r}; choose elstm or fwp_sum")


def online_recall(cell: str, gradient: str, task: RecallTask, steps: int, segment: int,
                  batch: int = 16, width: int = 32, lr: float = 3e-3, seed: int = 1,
                  log_every: int = 2000) -> dict[str, Any]:
    """Train online on a fresh stream; returns recall accuracy per ``log_every`` steps and the
    CPU time per step."""
    if gradient not in ("rtrl", "tbptt"):
        raise UserError(f"unknown gradient {gradient!r}; choose rtrl or tbptt")
    torch.manual_seed(seed)
    net = build_cell(cell, task.d_in, width)
    head = nn.Linear(net.n, task.symbols)
    params = list(net.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    x, target, start = task.stream(batch, steps, torch.Generator().manual_seed(seed))
    state, sens = net.initial(batch)
    curve, hits, count = [], 0, 0
    tic = time.process_time()
    for a in range(0, steps, segment):
        b = min(a + segment, steps)
        y, state, seg = net(x[:, a:b], state, start[:, a:b], bptt=gradient == "tbptt")
        logits = head(y)
        mask = target[:, a:b] >= 0
        optimizer.zero_grad(set_to_none=True)
        if mask.any():
            F.cross_entropy(logits[mask], target[:, a:b][mask]).backward()
            hits += int((logits[mask].argmax(-1) == target[:, a:b][mask]).sum())
            count += int(mask.sum())
        if gradient == "rtrl":
            sens = net.rtrl_backward(seg, sens)
        optimizer.step()
        state = tuple(s.detach() for s in state)
        if b % log_every < segment or b == steps:
            curve.append({"step": b, "accuracy": hits / max(count, 1)})
            hits = count = 0
    seconds = time.process_time() - tic
    return {"cell": cell, "gradient": gradient, "delay": task.delay, "segment": segment,
            "steps": steps, "batch": batch, "width": width, "seed": seed, "curve": curve,
            "final_accuracy": curve[-1]["accuracy"], "ms_per_step": 1e3 * seconds / steps}


def _saved_bytes(fn: Any) -> tuple[Any, int]:
    """Run ``fn`` and count the bytes autograd saves for the backward."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total


def cost_per_step(cell: str, lengths: list[int], d_in: int = 32, width: int = 64,
                  batch: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """Memory and time of one gradient over a sequence of T steps: full BPTT (autograd's saved
    tensors grow with T) against RTRL run step by step (the sensitivities, fixed size). Times
    are this process's CPU time (one thread), so a busy machine does not inflate them."""
    torch.manual_seed(seed)
    net = build_cell(cell, d_in, width)
    rows = []
    for T in lengths:
        x = torch.randn(batch, T, d_in)
        start = torch.zeros(batch, T, dtype=torch.bool)
        start[:, 0] = True
        state, sens = net.initial(batch)
        tic = time.process_time()
        y, saved = _saved_bytes(functools.partial(net, x, state, start, bptt=True))
        y = y[0]
        y.square().mean().backward()
        bptt_s = time.process_time() - tic
        net.zero_grad(set_to_none=True)
        state, sens = net.initial(batch)
        sens_bytes = sum(s.numel() * s.element_size() for s in sens)
        tic = time.process_time()
        for xt, st in zip(x.split(1, 1), start.split(1, 1)):
            y, state, seg = net(xt, state, st)
            y.square().mean().backward()
            sens = net.rtrl_backward(seg, sens)
            state = tuple(s.detach() for s in state)
        rtrl_s = time.process_time() - tic
        net.zero_grad(set_to_none=True)
        rows.append({"cell": cell, "T": T, "bptt_saved_MB": saved / 2**20,
                     "bptt_ms_per_step": 1e3 * bptt_s / T,
                     "rtrl_sensitivity_MB": sens_bytes / 2**20,
                     "rtrl_ms_per_step": 1e3 * rtrl_s / T})
    return rows
