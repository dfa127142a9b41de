"""Returns against environment frames over seeds: a markdown table and a plot.

Runs are grouped by their config without the seed. A run's curve is the mean return of the
episodes finished in each of ``bins`` equal frame intervals; a group's curve is the mean and
the range (min, max) of its seeds' curves. The table gives, per group, the final return (mean
over the last fifth of training, per seed), the seeded evaluation's mean return, and frames
per second; for multi-task runs, the evaluation return per task. Beneath it, paired differences
of the seeded evaluation return (:mod:`fwp.stats`): each PPO core against the LSTM core of the
same config, and R2AC with RTRL against truncated BPTT (our choice of references), paired by
seed (same training episodes' seeds) and, within the seeds, by evaluation episode (episode i
plays environment seed ``eval_seed + i`` in every run); the verdicts come from Holm-adjusted
paired t-tests over all comparisons of the report.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from fwp.config import read_file, write_atomic
from fwp.errors import UserError
from fwp.rl.train import EVAL
from fwp.runs import CONFIG, METRICS, read_metrics
from fwp.stats import holm_verdicts, paired_difference


def read_run(run: Path) -> dict[str, Any]:
    if not (run / CONFIG).is_file():
        raise UserError(f"{run} is not a run folder of fwp rl (no {CONFIG})")
    rows = read_metrics(run / METRICS, "train")
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
    groupread = [read_run(Path(r)) for r in runs]
    summary = summarise(groupread, bins)
    lines = ["| env | core | seeds (finished) | final return, mean [min, max] | eval return | "
             "frames/s |", "|---|---|---|---:|---:|---:|"]
    for label, s in summary.items():
        env, core = label.split(" | ")
        fps = f"{s['fps']:.0f}" if s["fps"] else "–"
        lines.append(f"| {env} | {core} | {len(s['seeds'])} ({s['done']}) | "
                     f"{_mean_range(s['final'])} | {_mean_range(s['eval'])} | {fps} |")
    table = "\n".join(lines + per_task_table(groupread) + paired_table(groupread))
    out.mkdir(parents=True, exist_ok=True)
    caption = ("Per config, mean [min, max] over its seeds: final return = the mean return of "
               "the episodes finished in the last fifth of training; eval return = the seeded "
               "evaluation (the same episodes for every run); frames/s = environment frames per "
               "wall second of training, mean over the runs.")
    write_atomic(out / "report.md", "# fwp rl report\n\n" + caption + "\n\n" + table + "\n")
    _plot(summary, out / "returns.png")
    return table


def per_task_table(runs: list[dict]) -> list[str]:
    """The seeded evaluation's return per task of the multi-task runs (the evaluation plays
    the tasks in turn), mean [min, max] over seeds; no lines when no run has several tasks."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        if run["eval"] and len(run["eval"].get("per_task", {})) > 1:
            groups[label_of(run["config"])].append(run["eval"]["per_task"])
    if not groups:
        return []
    lines = ["", "Evaluation return per task of the multi-task agents (mean [min, max] over "
             "seeds):", "", "| env | core | seeds | task | eval return |",
             "|---|---|---:|---|---:|"]
    for label, evals in sorted(groups.items()):
        env, core = label.split(" | ")
        for task in evals[0]:
            lines.append(f"| {env} | {core} | {len(evals)} | {task} | "
                         f"{_mean_range([e[task] for e in evals])} |")
    return lines


def reference_of(config: dict) -> dict | None:
    """The config that ``config`` is compared with: a PPO core other than the LSTM against the
    LSTM core, R2AC with RTRL against truncated BPTT (all else equal); None for a reference."""
    net = dict(config["network"])
    if config["algo"] == "ppo" and net["model"] != "lstm":
        net.update(model="lstm", options={})
    elif config["algo"] == "r2ac" and net["gradient"] == "rtrl":
        net["gradient"] = "tbptt"
    else:
        return None
    return {**config, "network": net}


def _key(config: dict) -> str:
    """A config without its seed and threads: the runs that pair up by seed."""
    return json.dumps({k: v for k, v in config.items() if k not in ("seed", "threads")},
                      sort_keys=True)


def paired_table(runs: list[dict]) -> list[str]:
    """Evaluation return minus its reference's, per seed and per evaluation episode, with
    Holm-adjusted verdicts over all rows; no lines when nothing pairs up."""
    by_key: dict[str, dict[int, dict]] = defaultdict(dict)
    for run in runs:
        if run["eval"]:
            by_key[_key(run["config"])][run["config"]["seed"]] = run
    rows = []
    for on in by_key.values():
        config = next(iter(on.values()))["config"]
        reference = reference_of(config)
        off = by_key.get(_key(reference)) if reference else None
        if not off or not set(off) & set(on):
            continue
        mean = {side: {s: r["eval"]["mean_return"] for s, r in group.items()}
                for side, group in (("off", off), ("on", on))}
        episodes = {side: {s: r["eval"]["returns"] for s, r in group.items()}
                    for side, group in (("off", off), ("on", on))}
        rows.append((label_of(config), label_of(reference).split(" | ")[1],
                     paired_difference(mean["off"], mean["on"], episodes["off"],
                                       episodes["on"])))
    if not rows:
        return []
    lines = ["", "Paired differences of the evaluation return (core − reference; 95 % "
             "intervals over seeds and over evaluation episodes; Holm over all rows):", "",
             "| env | core | reference | seeds | difference | over seeds | over episodes | "
             "Holm p | verdict |", "|---|---|---|---:|---:|---|---|---:|---|"]
    for (label, reference, d), (p, verdict) in zip(rows, holm_verdicts([r[-1] for r in rows])):
        env, core = label.split(" | ")
        seeds, episodes = d.over_seeds, d.over_episodes
        lines.append(f"| {env} | {core} | {reference} | {len(d.seeds)} | {seeds.mean:+.2f} | "
                     f"[{seeds.low:+.2f}, {seeds.high:+.2f}] | "
                     f"[{episodes.low:+.2f}, {episodes.high:+.2f}] | {p:.3f} | {verdict} |")
    return lines


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
        title = env.replace("MiniGrid-", "").replace("-v0", "").replace(",", ", ")
        ax.set(title=title, xlabel="frames", ylabel="return")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
