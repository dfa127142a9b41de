"""The report of an ``fwp lm sweep``: held-out bits per byte per model (mean ± std over seeds),
training time, and paired differences between the grid's ``compare`` pairs with Holm-adjusted
verdicts (the statistics of :mod:`fwp.stats`, as the few-shot study's)."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from fwp.config import read_file, write_atomic
from fwp.errors import UserError
from fwp.stats import holm_verdicts, paired_difference

MODES = ("carried", "reset")


def collect(out: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """model → seed → final.json of the finished runs under ``out/runs``."""
    runs: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for path in sorted(Path(out).glob("runs/*/seed*/final.json")):
        runs[path.parent.parent.name][int(path.parent.name[4:])] = json.loads(path.read_text())
    return runs


def _mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "–"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def model_table(runs: dict, counts: dict[str, int]) -> list[str]:
    lines = ["| model | parameters | seeds | valid bits/byte (reset) | valid bits/byte (carried)"
             " | train minutes |", "|---|---:|---:|---:|---:|---:|"]
    for model, seeds in runs.items():
        cells = [_mean_sd([r["valid"][mode]["bits_per_byte"] for r in seeds.values()])
                 for mode in ("reset", "carried")]
        minutes = statistics.mean(r["train_seconds"] for r in seeds.values()) / 60
        lines.append(f"| {model} | {counts.get(model, 0):,} | {len(seeds)} | {cells[0]} | "
                     f"{cells[1]} | {minutes:.1f} |")
    return lines + [""]


def paired_table(runs: dict, compare: list[list[str]], mode: str) -> list[str]:
    """first − second in bits per byte per seed: positive means the second model is better."""
    rows = []
    for first, second in compare:
        if first in runs and second in runs and set(runs[first]) & set(runs[second]):
            a = {s: r["valid"][mode]["bits_per_byte"] for s, r in runs[first].items()}
            b = {s: r["valid"][mode]["bits_per_byte"] for s, r in runs[second].items()}
            rows.append((first, second, paired_difference(b, a)))
    if not rows:
        return []
    lines = [f"### Paired differences ({mode} state): first − second, bits/byte (> 0: second "
             f"better)", "", "| first | second | seeds | mean | 95 % interval | Holm p | "
             "verdict |", "|---|---|---:|---:|---|---:|---|"]
    for (first, second, d), (p, verdict) in zip(rows, holm_verdicts([r[-1] for r in rows])):
        iv = d.over_seeds
        shown = {"gain": f"{second} better", "loss": f"{first} better"}.get(verdict, verdict)
        lines.append(f"| {first} | {second} | {len(d.seeds)} | {iv.mean:+.3f} | "
                     f"[{iv.low:+.3f}, {iv.high:+.3f}] | {p:.3f} | {shown} |")
    return lines + [""]


def curves(out: Path, models: list[str], path: Path) -> Path | None:
    """Validation bits per byte during training (the ``val`` records of ``metrics.jsonl``) of
    each model's finished runs: the mean over seeds and its range; None before any record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    drawn = False
    for model in models:
        per_seed = []
        for final in sorted(Path(out).glob(f"runs/{model}/seed*/final.json")):
            lines = (final.parent / "metrics.jsonl").read_text().splitlines()
            records = [json.loads(line) for line in lines if '"split": "val"' in line]
            per_seed.append({r["step"]: r["bits_per_byte"] for r in records})
        steps = sorted(set.intersection(*(set(c) for c in per_seed))) if per_seed else []
        if not steps:
            continue
        values = np.array([[c[s] for s in steps] for c in per_seed])
        line, = ax.plot(steps, values.mean(0), marker=".", label=f"{model} ({len(per_seed)})")
        if len(per_seed) > 1:
            ax.fill_between(steps, values.min(0), values.max(0), color=line.get_color(),
                            alpha=0.2, linewidth=0)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="training step", ylabel="bits per byte, first eval_tokens of valid",
           title="held-out bits per byte during training: mean over seeds (n) and range")
    ax.title.set_fontsize(10)
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(out: Path) -> str:
    """Write ``out/report.md`` (and ``out/curves.png``) and return the report's text."""
    runs = collect(Path(out))
    if not runs:
        raise UserError(f"no finished run under {out}/runs; train some with fwp lm sweep")
    grid = read_file(Path(out) / "grid.json") if (Path(out) / "grid.json").is_file() else {}
    compare = grid.get("compare", [])
    text = "\n".join([f"## Sweep {out}: {sum(map(len, runs.values()))} finished runs", "",
                      *model_table(runs, grid.get("counts", {})),
                      *[line for mode in MODES for line in paired_table(runs, compare, mode)]])
    if curves(Path(out), list(runs), Path(out) / "curves.png"):
        text += "\n![validation bits per byte during training](curves.png)\n"
    write_atomic(Path(out) / "report.md", text + "\n")
    return text
