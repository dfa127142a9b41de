"""Pictures of the numbers of :mod:`fwp.fewshot.protocols` (computation lives beside, not here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fwp.fewshot.protocols.continual import result_groups


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def plot_streams(result: dict[str, Any], path: Path, title: str, n_way: int) -> None:
    """Delayed labels / sequential streams: accuracy against the instance of the class (left)
    and against the position in the stream, per order (right)."""
    plt = _pyplot()
    fig, (by_instance, by_position) = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
    for entry in result["orders"]:
        order = " → ".join(entry["order"])
        for i, task in enumerate(entry["tasks"]):
            k = range(1, len(task["by_instance"]) + 1)
            label = task["dataset"] if len(entry["tasks"]) == 1 else f"{task['dataset']} " \
                f"({'first' if i == 0 else 'second'}; {order})"
            by_instance.errorbar(k, task["by_instance"], yerr=task["by_instance_ci95"],
                                 marker="o", capsize=3, label=label)
        positions = range(1, len(entry["by_position"]) + 1)
        by_position.plot(positions, entry["by_position"], label=order, lw=1)
        if len(entry["tasks"]) > 1:
            by_position.axvline(len(entry["by_position"]) / 2 + 0.5, color="grey", ls="--",
                                lw=0.8)
    for ax in (by_instance, by_position):
        ax.axhline(100 / n_way, color="grey", lw=0.8, ls=":")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    by_instance.set_xlabel("instance of the class in its segment (1 = first image shown)")
    by_position.set_xlabel("position in the stream (dashed: the switch)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_continual(result: dict[str, Any], path: Path, title: str, n_way: int) -> None:
    """Meta-continual learning: acc(A|A), acc(A|A→B), acc(B|A→B), acc(B|B) per order."""
    from fwp.fewshot.protocols.continual import QUERIES

    plt = _pyplot()
    groups = result_groups(result)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    width = 0.8 / len(QUERIES)
    for j, name in enumerate(QUERIES):
        xs = [i + (j - (len(QUERIES) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, [g[name]["accuracy"] for _, g in groups], width,
               yerr=[g[name]["ci95"] for _, g in groups], capsize=2,
               label=f"acc({name.replace('AB', 'A→B')})")
    ax.axhline(100 / n_way, color="grey", lw=0.8, ls=":")
    ax.set_xticks(range(len(groups)), [name for name, _ in groups])
    ax.set_ylabel("query accuracy (%)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
