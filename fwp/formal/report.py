"""Sweep report: a markdown table of sequence accuracy per bin and a heat map (PNG)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fwp.errors import UserError

SWEEP, RUNS = "sweep.json", "runs"


def collect(sweep_dir: Path) -> tuple[list[str], list[str], list[str], dict]:
    """(languages, models, bins, results[(language, model)] = metrics) of a sweep folder."""
    sweep_dir = Path(sweep_dir)
    runs = sweep_dir / RUNS
    if not runs.is_dir():
        raise UserError(f"{sweep_dir} is not a sweep folder (no {RUNS}/); run fwp formal sweep")
    results = {}
    for path in sorted(runs.glob("*/*/metrics.json")):
        metrics = json.loads(path.read_text())
        results[(metrics["language"], metrics["model"])] = metrics
    if not results:
        raise UserError(f"{sweep_dir} has no finished runs yet; run or resume fwp formal sweep")
    languages = _ordered([k[0] for k in results], sweep_dir, "languages")
    models = _ordered([k[1] for k in results], sweep_dir, "models")
    bins: list[str] = []
    for metrics in results.values():
        bins += [b for b in metrics["bins"] if b not in bins]
    bins.sort(key=lambda b: tuple(int(x) for x in b.split("-")))
    return languages, models, bins, results


def _ordered(found: list[str], sweep_dir: Path, key: str) -> list[str]:
    """The sweep's grid in its own order (sweep.json; unfinished cells included), then any
    other finished run found, sorted."""
    order: list[str] = []
    if (sweep_dir / SWEEP).exists():
        order = json.loads((sweep_dir / SWEEP).read_text()).get(key, [])
    return order + sorted(set(found) - set(order))


def accuracy_grid(languages, models, bin_, results) -> np.ndarray:
    """Sequence accuracy ``[models, languages]`` in one bin; NaN where not run (yet)."""
    grid = np.full((len(models), len(languages)), np.nan)
    for i, model in enumerate(models):
        for j, language in enumerate(languages):
            metrics = results.get((language, model))
            if metrics and bin_ in metrics["bins"]:
                grid[i, j] = metrics["bins"][bin_]["seq_acc"]
    return grid


def markdown(sweep_dir: Path) -> str:
    """Tables of sequence accuracy (%) per bin, models × languages, and the time spent."""
    languages, models, bins, results = collect(sweep_dir)
    lines = []
    for bin_ in bins:
        grid = accuracy_grid(languages, models, bin_, results)
        lines += [f"Sequence accuracy (%), test lengths {bin_}:", ""]
        lines.append("| model | " + " | ".join(languages) + " |")
        lines.append("|---|" + "---:|" * len(languages))
        for model, row in zip(models, grid):
            cells = ["—" if np.isnan(v) else f"{v:.1f}" for v in row]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    train_seconds = sum(m["train_seconds"] for m in results.values())
    lines.append(f"{len(results)} runs; training time {train_seconds / 60:.1f} min in total.")
    sweep_file = Path(sweep_dir) / SWEEP
    if sweep_file.exists():
        info = json.loads(sweep_file.read_text())
        if "wall_seconds" in info:
            lines.append(f"Sweep wall time: {info['wall_seconds'] / 60:.1f} min.")
    return "\n".join(lines) + "\n"


def heatmap(sweep_dir: Path, path: Path) -> Path:
    """One panel per bin: models × languages, colour = sequence accuracy, value written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    languages, models, bins, results = collect(sweep_dir)
    fig, axes = plt.subplots(
        1, len(bins), squeeze=False, sharey=True, layout="constrained",
        figsize=(1.6 + 1.0 * len(languages) * len(bins), 1.4 + 0.45 * len(models)),
    )
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    for ax, bin_ in zip(axes[0], bins):
        grid = accuracy_grid(languages, models, bin_, results)
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=100,
                          aspect="auto")
        ax.set_xticks(range(len(languages)), languages, rotation=30, ha="right")
        ax.set_yticks(range(len(models)), models)
        ax.tick_params(axis="y", labelleft=ax is axes[0][0])
        ax.set_title(f"lengths {bin_}")
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.0f}", ha="center", va="center",
                        color="black" if value > 60 else "white", fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), label="sequence accuracy (%)")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_report(sweep_dir: Path) -> tuple[Path, Path, str]:
    """Write ``report.md`` and ``heatmap.png`` into the sweep folder."""
    sweep_dir = Path(sweep_dir)
    text = markdown(sweep_dir)
    md_path = sweep_dir / "report.md"
    md_path.write_text(text)
    png_path = heatmap(sweep_dir, sweep_dir / "heatmap.png")
    return md_path, png_path, text
