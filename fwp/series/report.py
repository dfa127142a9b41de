"""``fwp series report DIR``: a sweep's tables from its finished runs' ``metrics.json``.

Test accuracy mean ± std over seeds per data set × model × drop; wall time and parameters per
model; and, pairing runs by seed (same data split and dropped points, different
initialisation), each continuous FWP against the neural CDE and against DeltaNet, with a 95 %
t-interval over seeds and Holm-adjusted paired t-tests (:mod:`fwp.stats`) over the whole table.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from fwp.errors import UserError
from fwp.stats import holm_verdicts, paired_difference

FWP_MODELS = ("ct_hebb", "ct_oja", "ct_delta")
REFERENCES = ("ncde", "deltanet")


def collect(out: Path) -> list[dict[str, Any]]:
    runs = []
    for path in sorted((out / "runs").glob("*/seed*/metrics.json")):
        runs.append(json.loads(path.read_text()))
    return runs


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    std = f" ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else ""
    return f"{np.mean(values):.1f}{std} ({len(values)})"


def accuracy_tables(runs: list[dict]) -> list[str]:
    lines = []
    by = defaultdict(list)
    for r in runs:
        by[(r["dataset"], r["model"], r["drop"])].append(r["test"]["accuracy"])
    for dataset in sorted({r["dataset"] for r in runs}):
        drops = sorted({r["drop"] for r in runs if r["dataset"] == dataset})
        models = sorted({r["model"] for r in runs if r["dataset"] == dataset},
                        key=_model_order)
        lines += [f"### {dataset}: test accuracy (%), mean ± std over seeds (n)", "",
                  "| model | " + " | ".join(f"{100 * d:g} % dropped" for d in drops) + " |",
                  "|---|" + "---:|" * len(drops)]
        for model in models:
            cells = [_cell(by[(dataset, model, d)]) for d in drops]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _model_order(model: str) -> tuple[int, str]:
    order = [*FWP_MODELS, *REFERENCES]
    return (order.index(model) if model in order else len(order), model)


def time_table(runs: list[dict]) -> list[str]:
    by = defaultdict(list)
    for r in runs:
        by[(r["dataset"], r["model"])].append(r)
    lines = ["### Wall time per run (training and validation, one thread)", "",
             "| data set | model | parameters | runs | seconds per run | seconds per epoch |",
             "|---|---|---:|---:|---:|---:|"]
    for (dataset, model), rs in sorted(by.items(), key=lambda kv: (kv[0][0],
                                                                    _model_order(kv[0][1]))):
        lines.append(f"| {dataset} | {model} | {rs[0]['parameters']} | {len(rs)} | "
                     f"{np.mean([r['train_seconds'] for r in rs]):.0f} | "
                     f"{np.mean([r['seconds_per_epoch'] for r in rs]):.2f} |")
    return lines + [""]


def paired_table(runs: list[dict]) -> list[str]:
    acc = defaultdict(dict)
    for r in runs:
        acc[(r["dataset"], r["model"], r["drop"])][r["seed"]] = r["test"]["accuracy"]
    rows = []
    for (dataset, model, drop), seeds in sorted(acc.items()):
        if model not in FWP_MODELS:
            continue
        for reference in REFERENCES:
            other = acc.get((dataset, reference, drop))
            if other and set(other) & set(seeds):
                rows.append((dataset, drop, model, reference,
                             paired_difference(other, seeds)))
    if not rows:
        return []
    lines = ["### Paired differences (FWP − reference, points of test accuracy)", "",
             "| data set | dropped | FWP | reference | seeds | mean | 95 % interval | "
             "Holm p | verdict |", "|---|---:|---|---|---:|---:|---|---:|---|"]
    for (dataset, drop, model, reference, d), (p, verdict) in zip(
            rows, holm_verdicts([row[-1] for row in rows])):
        iv = d.over_seeds
        lines.append(f"| {dataset} | {100 * drop:g} % | {model} | {reference} | "
                     f"{len(d.seeds)} | {iv.mean:+.1f} | [{iv.low:+.1f}, {iv.high:+.1f}] | "
                     f"{p:.3f} | {verdict} |")
    return lines + [""]


def accuracy_plot(runs: list[dict], path: Path) -> Path:
    """One panel per data set: test accuracy against the fraction of points dropped, per
    model, the mean over seeds and its range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in runs})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False,
                             layout="constrained")
    for ax, dataset in zip(axes[0], datasets):
        mine = [r for r in runs if r["dataset"] == dataset]
        drops = sorted({r["drop"] for r in mine})
        for model in sorted({r["model"] for r in mine}, key=_model_order):
            accs = [[r["test"]["accuracy"] for r in mine if r["model"] == model and r["drop"] == d]
                    for d in drops]
            shown = [(100 * d, a) for d, a in zip(drops, accs) if a]
            x = [d for d, _ in shown]
            line, = ax.plot(x, [np.mean(a) for _, a in shown], marker="o", label=model)
            ax.fill_between(x, [min(a) for _, a in shown], [max(a) for _, a in shown],
                            color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set(title=dataset, xlabel="points dropped (%)", ylabel="test accuracy (%)")
        ax.legend(fontsize=8)
    fig.suptitle("test accuracy: mean over seeds and range")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(out: Path) -> str:
    """Write ``out/report.md`` (and ``out/accuracy.png``) and return the report's text."""
    runs = collect(Path(out))
    if not runs:
        raise UserError(f"no finished run under {out}/runs; train some with fwp series sweep")
    accuracy_plot(runs, Path(out) / "accuracy.png")
    text = "\n".join([f"## Sweep {out}: {len(runs)} finished runs", "",
                      "![test accuracy against points dropped](accuracy.png)", "",
                      *accuracy_tables(runs), *time_table(runs), *paired_table(runs)])
    (Path(out) / "report.md").write_text(text + "\n")
    return text
