"""Sweep report: markdown tables of sequence accuracy per bin (mean over seeds of each cell's
chosen configuration), the search's choices, each model against a reference model (paired by
seed, Holm over the report) when the sweep names one, and a heat map (PNG)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fwp.errors import UserError
from fwp.stats import PairedDifference, holm_verdicts, paired_difference, seeds_needed

SWEEP, RUNS, DATA, PARTS = "sweep.json", "runs", "data", "parts.json"


def collect(sweep_dir: Path) -> tuple[list[str], list[str], list[str], dict, dict]:
    """(languages, models, bins, results, info) of a sweep folder.

    ``results[(language, model)]`` lists the metrics of the finished seed runs of the cell's
    chosen configuration (from ``sweep.json``; before the choice is known, the finished search
    runs with the best validation accuracy so far, one per seed), each with its ``seed`` (from
    its folder's name).
    """
    sweep_dir = Path(sweep_dir)
    runs = sweep_dir / RUNS
    if not runs.is_dir():
        raise UserError(f"{sweep_dir} is not a sweep folder (no {RUNS}/ and no {PARTS}); run fwp "
                        f"formal sweep")
    info = _sweep_info(sweep_dir)
    found: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for path in sorted(runs.glob("*/*/*/s*/metrics.json")):
        language, model, config, seed = path.relative_to(runs).parts[:4]
        found.setdefault((language, model), {}).setdefault(config, []).append(
            {**json.loads(path.read_text()), "seed": int(seed[1:])})
    if not found:
        raise UserError(f"{sweep_dir} has no finished runs yet; run or resume fwp formal sweep")
    results = {}
    for (language, model), configs in found.items():
        chosen = info.get("chosen", {}).get(f"{language}/{model}")
        if chosen is not None:
            name = f"lr{chosen['lr']:g}-l{chosen['layers']}"
        else:
            name = max(configs, key=lambda c: max(_valid_key(m) for m in configs[c]))
        if name in configs:
            results[(language, model)] = configs[name]
    languages = _ordered([k[0] for k in results], info.get("languages", []))
    models = _ordered([k[1] for k in results], list(info.get("models", [])))
    bins: list[str] = []
    for metrics in (m for ms in results.values() for m in ms):
        bins += [b for b in metrics["bins"] if b not in bins]
    bins.sort(key=lambda b: tuple(int(x) for x in b.split("-")))
    return languages, models, bins, results, info


def _sweep_info(sweep_dir: Path) -> dict:
    path = Path(sweep_dir) / SWEEP
    return json.loads(path.read_text()) if path.is_file() else {}


def _has_answer_accuracy(results: dict, language: str) -> bool:
    return any("answer_acc" in scores for (lang, _), runs in results.items() if lang == language
               for metrics in runs for scores in metrics["bins"].values())


def _valid_key(metrics: dict) -> tuple[float, float]:
    valid = metrics.get("valid", {"seq_acc": 0.0, "loss": 0.0})
    return (valid["seq_acc"], -valid["loss"])


def _ordered(found: list[str], order: list[str]) -> list[str]:
    """The sweep's grid in its own order (unfinished cells included), then any other run."""
    return order + sorted(set(found) - set(order))


def accuracy_grid(languages, models, bin_, results, key: str = "seq_acc"
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and standard deviation (n − 1; 0 for one seed) over seeds of the sequence accuracy
    (or the metric ``key``), and the seed count, each ``[models, languages]``; NaN (count 0)
    where nothing finished yet."""
    mean = np.full((len(models), len(languages)), np.nan)
    std, count = np.full_like(mean, np.nan), np.zeros_like(mean)
    for i, model in enumerate(models):
        for j, language in enumerate(languages):
            values = [m["bins"][bin_][key] for m in results.get((language, model), [])
                      if key in m["bins"].get(bin_, {})]
            if values:
                mean[i, j], count[i, j] = np.mean(values), len(values)
                std[i, j] = np.std(values, ddof=1) if len(values) > 1 else 0.0
    return mean, std, count


@dataclass(frozen=True)
class Comparison:
    """One model against the reference model in one language (or task) and bin."""

    part: str  # the grid part ("" for a sweep without parts)
    language: str
    bin: str
    metric: str  # "seq_acc", or "answer_acc" where the task has answers (code execution)
    model: str
    reference: str
    difference: PairedDifference  # model − reference, in points, paired by seed


def _per_seed(runs: list[dict], bin_: str, metric: str) -> dict[int, float]:
    return {m["seed"]: m["bins"][bin_][metric] for m in runs if metric in m["bins"].get(bin_, {})}


def comparisons(sweep_dir: Path, reference: str | None = None, part: str = ""
                ) -> list[Comparison]:
    """Every other model against ``reference`` (default: ``sweep.json``'s ``reference``, which
    the grid or ``--reference`` set; [] when neither names one), in every language and bin.

    The metric is the answer accuracy where the task has one (code execution, where at a small
    budget whole programs are rarely right), else the sequence accuracy. Runs pair up by seed:
    every run of a sweep sees the same data sets (``data_seed``), and a seed fixes its
    initialisation and batch order."""
    languages, models, bins, results, info = collect(sweep_dir)
    reference = reference or info.get("reference")
    if reference is None:
        return []
    if reference not in models:
        raise UserError(f"reference model {reference!r} is not a model of {sweep_dir}; pass "
                        f"--reference with one of {', '.join(models)}")
    out = []
    for language in languages:
        metric = "answer_acc" if _has_answer_accuracy(results, language) else "seq_acc"
        for bin_ in bins:
            off = _per_seed(results.get((language, reference), []), bin_, metric)
            for model in models:
                on = _per_seed(results.get((language, model), []), bin_, metric)
                if model != reference and set(on) & set(off):
                    out.append(Comparison(part, language, bin_, metric, model, reference,
                                          paired_difference(off, on)))
    return out


def comparison_table(rows: list[Comparison]) -> list[str]:
    """Markdown lines: each comparison's per-seed differences, mean and 95 % interval over
    seeds, p, Holm-adjusted p over all ``rows`` (one family) and verdict, and the seeds its
    spread needs to detect 3 points; no lines for no rows."""
    if not rows:
        return []
    parts = any(r.part for r in rows)
    lines = ["Each model against the reference, paired by seed (model − reference, points; 95 % "
             "t interval over seeds; Holm over all the rows of this table; seeds needed: for "
             "3 points at power 0.8 with the spread seen):", "",
             "| " + ("part | " if parts else "") + "task | bin | metric | model | reference | "
             "per seed | difference | over seeds | p | Holm p | verdict | seeds needed |",
             "|" + ("---|" if parts else "") + "---|---|---|---|---|---|---:|---|---:|---:|---|"
             "---:|"]
    for row, (p, verdict) in zip(rows, holm_verdicts([r.difference for r in rows])):
        d = row.difference
        per_seed = ", ".join(f"{s}: {v:+.1f}" for s, v in zip(d.seeds, d.per_seed))
        needed = seeds_needed(d.sd)
        metric = "answers" if row.metric == "answer_acc" else "sequences"
        lines.append(
            "| " + (f"{row.part} | " if parts else "") + f"{row.language} | {row.bin} | {metric} "
            f"| {row.model} | {row.reference} | {per_seed} | {d.over_seeds.mean:+.1f} | "
            f"[{d.over_seeds.low:+.1f}, {d.over_seeds.high:+.1f}] | {d.p_value:.3g} | {p:.3g} | "
            f"{verdict} | {needed if needed is not None else '–'} |")
    return lines + [""]


def markdown(sweep_dir: Path, reference: str | None = None, compare: bool = True) -> str:
    """Tables per bin (mean ± std over seeds, seed count where short), the chosen
    configurations, each model against ``reference`` (:func:`comparisons`; unless ``compare`` is
    false: a grid's parts are compared in the grid's report), and the runs and time spent."""
    languages, models, bins, results, info = collect(sweep_dir)
    seeds = len(info.get("seeds", [1]))
    runs = sorted(Path(sweep_dir, RUNS).glob("*/*/*/s*/metrics.json"))
    base = info.get("base", {})
    search = info.get("search", {})
    lrs = ", ".join(f"{lr:g}" for lr in dict.fromkeys(search.get("lr", [])))
    layers = ", ".join(str(n) for n in dict.fromkeys(search.get("layers", [])))
    searched = len(search.get("lr", [])) > 1
    setting = (f"search on validation over lr {{{lrs}}} × layers {{{layers}}}" if searched
               else f"lr {lrs}, layers {layers} (one setting, no search)")
    lines = [f"Protocol: {base.get('protocol', '?')}; model selection: "
             f"{base.get('selection', '?')}; {setting}; seeds {info.get('seeds', '?')}.", ""]
    answered = [lang for lang in languages if _has_answer_accuracy(results, lang)]
    tables = [("seq_acc", "Sequence accuracy", languages)]
    if answered:
        tables.append(("answer_acc", "Answer accuracy (positions whose answer is not the "
                       "no-output class: the printed values of code execution)", answered))
    for key, title, columns in tables:
        for bin_ in bins:
            mean, std, count = accuracy_grid(columns, models, bin_, results, key)
            if np.isnan(mean).all():
                continue
            lines += [f"{title} (%), bin {bin_} (mean ± std over seeds; (n) where fewer "
                      f"than {seeds} seeds finished):", ""]
            lines.append("| model | " + " | ".join(columns) + " |")
            lines.append("|---|" + "---:|" * len(columns))
            for i, model in enumerate(models):
                cells = []
                for j in range(len(columns)):
                    if np.isnan(mean[i, j]):
                        cells.append("—")
                        continue
                    text = f"{mean[i, j]:.1f} ± {std[i, j]:.1f}"
                    cells.append(text + (f" ({count[i, j]:.0f})" if count[i, j] < seeds else ""))
                lines.append(f"| {model} | " + " | ".join(cells) + " |")
            lines.append("")
    chosen = info.get("chosen", {})
    if chosen and searched:
        lines += ["Chosen configuration per cell (lr, layers), by validation accuracy:", ""]
        lines.append("| model | " + " | ".join(languages) + " |")
        lines.append("|---|" + "---|" * len(languages))
        for model in models:
            cells = [(f"{c['lr']:g}, {c['layers']}" if (c := chosen.get(f"{lang}/{model}"))
                      else "—") for lang in languages]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    if compare:
        lines += comparison_table(comparisons(sweep_dir, reference))
    train_seconds = sum(json.loads(p.read_text())["train_seconds"] for p in runs)
    expected = (len(info.get("languages", [])) * len(info.get("models", []))
                * (len(info.get("search", {}).get("lr", [])) + seeds - 1))
    lines.append(f"{len(runs)} of {expected or '?'} runs finished; training time "
                 f"{train_seconds / 60:.1f} min in total.")
    if "wall_seconds" in info:
        shared = info.get("wall_shared_by")
        lines.append(f"Sweep wall time so far: {info['wall_seconds'] / 60:.1f} min"
                     + (f" (of the parts {', '.join(shared)}, run in one pool)." if shared
                        else "."))
    return "\n".join(lines) + "\n"


def heatmap(sweep_dir: Path, path: Path) -> Path:
    """One panel per bin: models × languages, colour = mean sequence accuracy, value written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    languages, models, bins, results, _ = collect(sweep_dir)
    fig, axes = plt.subplots(
        1, len(bins), squeeze=False, sharey=True, layout="constrained",
        figsize=(1.6 + 1.0 * len(languages) * len(bins), 1.4 + 0.45 * len(models)),
    )
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    for ax, bin_ in zip(axes[0], bins):
        grid, _, _ = accuracy_grid(languages, models, bin_, results)
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=100,
                          aspect="auto")
        ax.set_xticks(range(len(languages)), languages, rotation=30, ha="right")
        ax.set_yticks(range(len(models)), models)
        ax.tick_params(axis="y", labelleft=ax is axes[0][0])
        ax.set_title(f"bin {bin_}")
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.0f}", ha="center", va="center",
                        color="black" if value > 60 else "white", fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), label="sequence accuracy (%), mean over seeds")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def parts_of(sweep_dir: Path) -> list[Path]:
    """The part folders of a grid with ``[parts]`` (each an ordinary sweep), in the grid's
    order (``DIR/parts.json``); [] for an ordinary sweep folder."""
    path = Path(sweep_dir) / PARTS
    if not path.is_file():
        return []
    return [Path(sweep_dir) / name for name in json.loads(path.read_text())]


def _is_part(sweep_dir: Path) -> bool:
    return Path(sweep_dir).resolve() in [p.resolve() for p in parts_of(Path(sweep_dir).parent)]


def write_report(sweep_dir: Path, reference: str | None = None) -> tuple[Path, str]:
    """Write ``report.md`` and ``heatmap.png`` into the sweep folder (into each part's folder,
    and the parts' reports joined in ``report.md``, for a grid with parts, with one table of
    comparisons over all the parts); returns the report's path and text. ``reference``: the
    model the others are compared with, over the sweep's own."""
    sweep_dir = Path(sweep_dir)
    parts = parts_of(sweep_dir)
    if not parts:
        part = _is_part(sweep_dir)
        text = markdown(sweep_dir, reference, compare=not part)
        if part and (reference or _sweep_info(sweep_dir).get("reference")):
            text += ("\nThe comparisons with the reference model are in the grid's report "
                     "(../report.md), one family over all its parts.\n")
        heatmap(sweep_dir, sweep_dir / "heatmap.png")
    else:
        sections, rows = [], []
        for part in parts:
            try:
                _, part_text = write_report(part, reference)
            except UserError:
                sections.append(f"## {part.name}\n\nNo finished runs yet.\n")
                continue
            rows += comparisons(part, reference, part.name)
            sections.append(f"## {part.name}\n\n![{part.name}]({part.name}/heatmap.png)\n\n"
                            f"{part_text}")
        table = comparison_table(rows)
        if table:
            sections.append("## Comparisons\n\n" + "\n".join(table))
        text = "\n".join(sections)
    md_path = sweep_dir / "report.md"
    md_path.write_text(text)
    return md_path, text
