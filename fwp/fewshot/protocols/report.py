"""Markdown of the numbers of ``delayed``, ``sequential`` and ``continual`` runs, for
``fwp fewshot eval`` (printed) and ``fwp fewshot report`` (one section per protocol)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fwp.fewshot.protocols.continual import result_groups

INSTANCES_SHOWN = (1, 2, 3, 5, 10)  # instance columns of the stream tables


def _cell(mean: float, ci: float) -> str:
    return "–" if mean != mean else f"{mean:.1f} ± {ci:.1f}"


def stream_rows(name: str, result: dict[str, Any]) -> list[str]:
    """One row per (order, task): accuracy at the 1st, 2nd, 3rd, 5th, 10th instance and overall."""
    rows = []
    for entry in result["orders"]:
        order = " → ".join(entry["order"])
        for i, task in enumerate(entry["tasks"]):
            shown = [_cell(task["by_instance"][k - 1], task["by_instance_ci95"][k - 1])
                     if k <= len(task["by_instance"]) else "–" for k in INSTANCES_SHOWN]
            where = task["dataset"] if len(entry["tasks"]) == 1 else \
                f"{task['dataset']} ({'1st' if i == 0 else '2nd'} of {order})"
            rows.append(f"| {name} | {where} | " + " | ".join(shown)
                        + f" | {_cell(task['accuracy'], task['ci95'])} |")
    return rows


def stream_table(rows: list[str]) -> str:
    head = " | ".join(f"{k}{'st' if k == 1 else 'nd' if k == 2 else 'rd' if k == 3 else 'th'}"
                      for k in INSTANCES_SHOWN)
    return "\n".join([
        f"| run | task | {head} | all |",
        "|---|---|" + "---:|" * (len(INSTANCES_SHOWN) + 1),
        *rows,
    ]) + "\n"


def continual_rows(name: str, result: dict[str, Any], forget_weight: float) -> list[str]:
    rows = []
    for label, entry in result_groups(result):
        cells = [_cell(entry[q]["accuracy"], entry[q]["ci95"]) for q in ("A|A", "A|AB", "B|AB",
                                                                         "B|B")]
        rows.append(f"| {name} | {forget_weight:g} | {label} | " + " | ".join(cells)
                    + f" | {entry['forgetting']:.1f} |")
    return rows


def continual_table(rows: list[str]) -> str:
    return "\n".join([
        "| run | λ (forget weight) | A → B | acc(A \\| A) | acc(A \\| A→B) | acc(B \\| A→B) "
        "| acc(B \\| B) | forgetting |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
        *rows,
    ]) + "\n"


def describe(name: str, protocol: str, result: dict[str, Any], forget_weight: float = 0.0) -> str:
    """The table of one evaluated run."""
    if protocol == "continual":
        return continual_table(continual_rows(name, result, forget_weight))
    return stream_table(stream_rows(name, result))


TITLES = {
    "delayed": "Delayed labels: accuracy (%) at the k-th instance of a class",
    "sequential": "Sequential multi-task adaptation: accuracy (%) at the k-th instance, per task "
                  "and order",
    "continual": "Meta-continual learning: query accuracy (%) after A, and after A then B",
}


def _evaluation(run: Path, split: str) -> dict[str, Any] | None:
    path = run / f"eval_{split}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def is_protocol_run(run: Path, split: str) -> bool:
    """Whether ``run`` was evaluated under a protocol other than ``episodic``."""
    evaluation = _evaluation(run, split)
    return evaluation is not None and evaluation.get("protocol", "episodic") != "episodic"


def protocol_sections(runs: list[Path], out: Path, split: str) -> tuple[str, list[Path]]:
    """Markdown with one table per protocol over ``runs`` (mean ± 95 % CI over streams), and
    each run's plot redrawn into ``out``; returns the text and the plot paths."""
    from fwp.fewshot.checkpoint import read_config
    from fwp.fewshot.protocols.plots import plot_continual, plot_streams

    rows: dict[str, list[str]] = {}
    figures: list[Path] = []
    for run in runs:
        evaluation = _evaluation(run, split)
        config = read_config(run)
        protocol, result = evaluation["protocol"], evaluation["result"]
        if protocol == "continual":
            rows.setdefault(protocol, []).extend(
                continual_rows(run.name, result, config.protocol.forget_weight))
        else:
            rows.setdefault(protocol, []).extend(stream_rows(run.name, result))
        figure = out / f"{run.name}_{protocol}_{split}.png"
        draw = plot_continual if protocol == "continual" else plot_streams
        draw(result, figure, f"{run.name}: {protocol} ({split})", config.data.n_way)
        figures.append(figure)
    text = ""
    for protocol in ("delayed", "sequential", "continual"):
        if protocol in rows:
            table = continual_table if protocol == "continual" else stream_table
            text += f"## {TITLES[protocol]}\n\nmean ± 95 % CI over {split} streams\n\n"
            text += table(rows[protocol]) + "\n"
    text += "".join(f"![{f.stem}]({f.name})\n" for f in figures)
    return text, figures
