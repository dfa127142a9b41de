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
import math
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fwp.config import write_atomic
from fwp.errors import UserError
from fwp.rl.rtrl import ELSTM, SumFWP
from fwp.stats import holm_verdicts, paired_difference


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


def _segments(task: RecallTask, batch: int, segment: int, generator: torch.Generator
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The endless stream in segments of ``segment`` steps, made a chunk at a time (a chunk is a
    whole number of episodes and of segments, so both learners see the same stream)."""
    unit = math.lcm(task.length, segment)
    chunk = unit * max(1, 2048 // unit)
    while True:
        x, target, start = task.stream(batch, chunk, generator)
        for a in range(0, chunk, segment):
            yield x[:, a:a + segment], target[:, a:a + segment], start[:, a:a + segment]


def online_recall(cell: str, gradient: str, task: RecallTask, steps: int, segment: int,
                  batch: int = 16, width: int = 32, lr: float = 3e-3, seed: int = 1,
                  log_every: int = 1000, cpu_seconds: float | None = None) -> dict[str, Any]:
    """Train online on a fresh stream for ``steps`` steps or, given ``cpu_seconds``, for as long
    as that much of this process's CPU time lasts (the same compute as another learner).

    Returns the recall accuracy of each ``log_every`` steps with the CPU seconds spent so far,
    the accuracy over the last ``log_every`` steps (``final_accuracy``), the steps run and the
    CPU time per step."""
    if gradient not in ("rtrl", "tbptt"):
        raise UserError(f"unknown gradient {gradient!r}; choose rtrl or tbptt")
    torch.manual_seed(seed)
    net = build_cell(cell, task.d_in, width)
    head = nn.Linear(net.n, task.symbols)
    params = list(net.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    state, sens = net.initial(batch)
    curve, hits, count, done = [], 0, 0, 0
    window: deque[tuple[int, int]] = deque(maxlen=max(1, log_every // segment))
    tic = time.process_time()
    for x, target, start in _segments(task, batch, segment, torch.Generator().manual_seed(seed)):
        if cpu_seconds is None:
            if done >= steps:
                break
            left = steps - done
            x, target, start = x[:, :left], target[:, :left], start[:, :left]
        elif time.process_time() - tic >= cpu_seconds:
            break
        y, state, seg = net(x, state, start, bptt=gradient == "tbptt")
        logits = head(y)
        mask = target >= 0
        optimizer.zero_grad(set_to_none=True)
        seg_hits = seg_count = 0
        if mask.any():
            F.cross_entropy(logits[mask], target[mask]).backward()
            seg_hits = int((logits[mask].argmax(-1) == target[mask]).sum())
            seg_count = int(mask.sum())
        if gradient == "rtrl":
            sens = net.rtrl_backward(seg, sens)
        optimizer.step()
        state = tuple(s.detach() for s in state)
        n = x.shape[1]
        done, hits, count = done + n, hits + seg_hits, count + seg_count
        window.append((seg_hits, seg_count))
        if done % log_every < n:
            curve.append({"step": done, "cpu_s": time.process_time() - tic,
                          "accuracy": hits / max(count, 1)})
            hits = count = 0
    seconds = time.process_time() - tic
    last = sum(c for _, c in window)
    return {"cell": cell, "gradient": gradient, "delay": task.delay, "segment": segment,
            "steps": done, "batch": batch, "width": width, "seed": seed, "curve": curve,
            "final_accuracy": sum(h for h, _ in window) / max(last, 1),
            "cpu_seconds": seconds, "ms_per_step": 1e3 * seconds / max(done, 1)}


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


LEARNT = 0.9


def learnt_at(learner: dict[str, Any]) -> float | None:
    """CPU seconds at the end of the first logged stretch with recall ≥ :data:`LEARNT` (None if
    none)."""
    return next((p["cpu_s"] for p in learner["curve"] if p["accuracy"] >= LEARNT), None)


def recall_report(results: dict[str, Any], out: Path) -> str:
    """``out/rtrl.md`` (per learner: steps, CPU time, final accuracy over seeds; RTRL − truncated
    BPTT per cell, paired by seed, Holm over the cells; memory and time per step) and
    ``out/recall.png`` (accuracy against CPU seconds, one line per seed); returns the markdown."""
    recall, settings = results["recall"], results.get("settings", {})
    window = settings.get("log_every", 1000)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in recall:
        groups[(r["cell"], r["gradient"])].append(r)
    lines = ["# RTRL against truncated BPTT: online delayed recall", ""]
    if settings:
        same = ("truncated BPTT ran for the CPU time RTRL took on the same cell and seed"
                if settings.get("compute") == "cpu" else "both learners ran the same steps")
        lines += [f"Delay {settings['delay']}, one update per {settings['segment']}-step segment "
                  f"(no truncated gradient spans the delay), RTRL {settings['steps']:,} steps; "
                  f"{same}. Final accuracy: recall over the last {window:,} steps (chance "
                  f"{1 / RecallTask().symbols:.2f}); learnt: the first {window:,} steps at "
                  f"{LEARNT:.0%} or more, and the CPU time by then. Times are CPU time of one "
                  f"thread.", ""]
    lines += ["| cell | gradient | seeds | steps | CPU s | ms / step | final accuracy, "
              "mean [min, max] | learnt | CPU s to learn, mean [min, max] |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (cell, gradient), rs in sorted(groups.items()):
        acc = [r["final_accuracy"] for r in rs]
        learnt = [t for t in (learnt_at(r) for r in rs) if t is not None]
        when = (f"{np.mean(learnt):.1f} [{min(learnt):.1f}, {max(learnt):.1f}]" if learnt
                else "–")
        lines.append(f"| {cell} | {gradient} | {len(rs)} | {np.mean([r['steps'] for r in rs]):,.0f}"
                     f" | {np.mean([r['cpu_seconds'] for r in rs]):.1f} | "
                     f"{np.mean([r['ms_per_step'] for r in rs]):.2f} | {np.mean(acc):.3f} "
                     f"[{min(acc):.3f}, {max(acc):.3f}] | {len(learnt)} of {len(rs)} | {when} |")
    cells = sorted({cell for cell, _ in groups if (cell, "rtrl") in groups
                    and (cell, "tbptt") in groups})
    rows: list[tuple[str, str, Any]] = []  # (cell, measure, paired difference)
    for c in cells:
        rtrl, tbptt = groups[(c, "rtrl")], groups[(c, "tbptt")]
        rows.append((c, "final accuracy", paired_difference(
            {r["seed"]: r["final_accuracy"] for r in tbptt},
            {r["seed"]: r["final_accuracy"] for r in rtrl})))
        if all(learnt_at(r) is not None for r in rtrl + tbptt):  # else censored: not compared
            rows.append((c, "CPU s to learn", paired_difference(
                {r["seed"]: learnt_at(r) for r in tbptt}, {r["seed"]: learnt_at(r) for r in rtrl})))
    if rows:
        lines += ["", "RTRL − truncated BPTT, paired by seed (the CPU time to learn only where "
                  "every seed of both learnt); Holm over the rows:", "",
                  "| cell | measure | difference | seeds | 95 % interval over seeds | p | Holm p "
                  "| verdict |", "|---|---|---:|---:|---|---:|---:|---|"]
        verdicts = holm_verdicts([d for _, _, d in rows])
        for (cell, measure, d), (p, verdict) in zip(rows, verdicts):
            i = d.over_seeds
            lines.append(f"| {cell} | {measure} | {i.mean:+.3f} | {i.n} | [{i.low:+.3f}, "
                         f"{i.high:+.3f}] | {d.p_value:.4f} | {p:.4f} | {verdict} |")
    if results.get("cost"):
        lines += ["", "Memory and CPU time of one gradient over T steps:", "",
                  "| cell | T | BPTT saved MB | BPTT ms / step | RTRL sensitivities MB | "
                  "RTRL ms / step |", "|---|---:|---:|---:|---:|---:|"]
        for c in results["cost"]:
            lines.append(f"| {c['cell']} | {c['T']} | {c['bptt_saved_MB']:.2f} | "
                         f"{c['bptt_ms_per_step']:.2f} | {c['rtrl_sensitivity_MB']:.2f} | "
                         f"{c['rtrl_ms_per_step']:.2f} |")
    if recall:
        _plot_recall(groups, out / "recall.png")
        lines += ["", "![recall accuracy against CPU seconds](recall.png)"]
    text = "\n".join(lines) + "\n"
    write_atomic(out / "rtrl.md", text)
    return text


def _plot_recall(groups: dict[tuple[str, str], list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({cell for cell, _ in groups})
    fig, axes = plt.subplots(1, len(cells), figsize=(5 * len(cells), 3.5), squeeze=False)
    colours, chance = {"rtrl": "tab:blue", "tbptt": "tab:orange"}, 1 / RecallTask().symbols
    for ax, cell in zip(axes[0], cells):
        for gradient, colour in colours.items():
            for i, r in enumerate(groups.get((cell, gradient), [])):
                ax.plot([0] + [p["cpu_s"] for p in r["curve"]],
                        [chance] + [p["accuracy"] for p in r["curve"]],
                        color=colour, alpha=0.7, lw=1, label=gradient if i == 0 else None)
        ax.axhline(chance, color="grey", ls=":", lw=1)
        ax.set(title=cell, xlabel="CPU seconds", ylabel="recall accuracy", ylim=(0, 1.02))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
