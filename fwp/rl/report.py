"""Returns against environment frames over seeds: a markdown table and a plot.

Runs are grouped by their config without the seed. A run's curve is the mean return of the
episodes finished in each of ``bins`` equal frame intervals; a group's curve is the mean and
the range (min, max) of its seeds' curves. The table gives, per group, the final return (mean
over the last fifth of training, per seed), the seeded evaluation's mean return, and frames
per second.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fwp.config import read_file, write_atomic
from fwp.errors import UserError
from fwp.rl.train import CONFIG, EVAL, METRICS


def read_run(run: Path) -> dict[str, Any]:
    if not (run / CONFIG).is_file():
        raise UserError(f"{run} is not a run folder of fwp rl (no {CONFIG})")
    rows = [json.loads(line) for line in (run / METRICS).read_text().splitlines()
            if line.strip()] if (run / METRICS).is_file() else []
    config = read_file(run / CONFIG)
    return {"path": run, "config": config, "rows": rows,
            "eval": read_file(run / EVAL) if (run / EVAL).is_file() else None}


def label_of(config: dict) -> str:
    net = config["network"]
    if config["algo"] == "r2ac":
        core = f"R2AC {net['cell']} {net['gradient']}"
    else:
        core = f"{net['layers']}×{net['model']}" + (f" {net['options']}" if net["options"]
                                                      else "")
    return f"{config['env']} | {core}"


def curve(rows: list[dict], frames: int, bins: int) -> np.ndarray:
    """Mean return per frame bin (NaN where no episode finished)."""
    edges = np.linspace(0, frames, bins + 1)
    sums, counts = np.zeros(bins), np.zeros(bins)
    for row in rows:
        if "return" in row:
            b = min(int(np.searchsorted(edges, row["frames"], side="left")) - 1, bins - 1)
            sums[max(b, 0)] += row["return"] * row["episodes"]
            counts[max(b, 0)] += row["episodes"]
    with np.errstate(invalid="ignore"):
        return sums / counts


def summarise(runs: list[dict], bins: int = 20) -> dict[str, dict]:
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(label_of(run["config"]), []).append(run)
    out = {}
    for label, members in sorted(groups.items()):
        frames = max(m["config"]["frames"] for m in members)
        curves = np.stack([curve(m["rows"], frames, bins) for m in members])
        with warnings.catch_warnings():  # a run with no finished episode yet: NaN, said as –
            warnings.simplefilter("ignore", RuntimeWarning)
            final = [np.nanmean(c[-max(1, bins // 5):]) for c in curves]
        evals = [m["eval"]["mean_return"] for m in members if m["eval"]]
        fps = [np.mean([r["fps"] for r in m["rows"]]) for m in members if m["rows"]]
        out[label] = {"seeds": [m["config"]["seed"] for m in members], "frames": frames,
                      "x": np.linspace(0, frames, bins + 1)[1:], "curves": curves,
                      "final": final, "eval": evals, "fps": float(np.mean(fps)) if fps else None,
                      "done": sum(m["eval"] is not None for m in members)}
    return out


def _mean_range(values: list[float]) -> str:
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return "–"
    return f"{np.mean(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def write_report(runs: list[Path], out: Path, bins: int = 20) -> str:
    """``out/report.md`` and ``out/returns.png`` for run folders ``runs``; returns the table."""
    summary = summarise([read_run(Path(r)) for r in runs], bins)
    lines = ["| env | core | seeds (finished) | final return, mean [min, max] | eval return | "
             "frames/s |", "|---|---|---|---:|---:|---:|"]
    for label, s in summary.items():
        env, core = label.split(" | ")
        fps = f"{s['fps']:.0f}" if s["fps"] else "–"
        lines.append(f"| {env} | {core} | {len(s['seeds'])} ({s['done']}) | "
                     f"{_mean_range(s['final'])} | {_mean_range(s['eval'])} | {fps} |")
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "report.md", "# fwp rl report\n\n" + table + "\n")
    _plot(summary, out / "returns.png")
    return table


def _plot(summary: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({label.split(" | ")[0] for label in summary})
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.5), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for label, s in summary.items():
            if not label.startswith(env + " | "):
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(s["curves"], 0)
                lo, hi = np.nanmin(s["curves"], 0), np.nanmax(s["curves"], 0)
            ax.plot(s["x"], mean, label=label.split(" | ")[1])
            ax.fill_between(s["x"], lo, hi, alpha=0.2)
        ax.set(title=env, xlabel="frames", ylabel="return")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
