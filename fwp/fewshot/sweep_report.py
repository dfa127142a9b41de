"""``DIR/report.md`` and plots of a sweep: accuracy per config and the bootstrapping verdicts.

Per config and K_test: mean ± std over the seeds evaluated so far. For every pair of configs that
differ only in β2, one with β2 = 0 (off) and one with β2 > 0 (on), and every pair of the grid's
``compare`` list: the paired difference on − off per seed, its 95 % t-interval over seeds, its
95 % interval over test episodes and the verdict; beside it the Holm-adjusted p-value and
verdict over all the report's comparisons, and the seeds that a 3-point difference needs
(:mod:`fwp.stats`). For every entry of the grid's ``interaction`` list, the change of a
difference between two pairs, (on_b − off_b) − (on_a − off_a), paired by seed the same way and
in the same Holm family. Per config also
the validation accuracy during training (from each evaluated run's ``metrics.jsonl``), mean over
seeds: when a config leaves chance shows there. The computation is :func:`summarise`; writing
and plotting are apart from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fwp.fewshot.checkpoint import METRICS
from fwp.fewshot.config import RunConfig
from fwp.fewshot.grid import EVAL, Grid, Pair, flat_config
from fwp.runs.policy import policies
from fwp.stats import PairedDifference, holm_verdicts, paired_difference, seeds_needed

SHOWN = ("k_shot", "k_extra", "beta1", "beta2", "beta3", "distill", "model", "steps")


@dataclass
class Summary:
    """Per config: K_test → seed → (accuracy, per-episode accuracies); the pairs; the
    interactions (pair a, pair b, K_test → the change); and per config, seed → validation step →
    accuracy."""

    results: dict[str, dict[int, dict[int, tuple[float, list[float]]]]]
    pairs: list[tuple[str, str, dict[int, PairedDifference]]]
    curves: dict[str, dict[int, dict[int, float]]]
    interactions: list[tuple[Pair, Pair, dict[int, PairedDifference]]]


def validation_curve(run: Path) -> dict[int, float]:
    """Step → validation accuracy of a run, from its metrics log."""
    curve = {}
    try:
        lines = (run / METRICS).read_text().splitlines()
    except OSError:
        return curve
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut by a stop
            continue
        if entry.get("split") == "val" and "accuracy" in entry:
            curve[int(entry["step"])] = float(entry["accuracy"])
    return curve


def beta2_pairs(grid: Grid) -> list[tuple[str, str]]:
    """(off, on) config names that differ only in β2, off with β2 = 0 and on with β2 > 0."""
    flat = {name: flat_config(c) for name, c in grid.configs.items()}
    runtime = {p[-1] for p, (rule, _) in policies(RunConfig).items() if rule == "runtime"}
    pairs = []
    for off, a in flat.items():
        for on, b in flat.items():
            differing = {k for k in a if k not in runtime | {"seed"} and a[k] != b[k]}
            if differing == {"beta2"} and a["beta2"] == 0 < b["beta2"]:
                pairs.append((off, on))
    return pairs


def compared_pairs(grid: Grid) -> list[tuple[str, str]]:
    """The β2 pairs, then the grid's ``compare`` pairs not among them."""
    pairs = beta2_pairs(grid)
    return pairs + [pair for pair in grid.compare if pair not in pairs]


def summarise(grid: Grid, root: Path) -> Summary:
    """Everything evaluated so far under ``root``."""
    results: dict[str, dict[int, dict[int, tuple[float, list[float]]]]] = {}
    curves: dict[str, dict[int, dict[int, float]]] = {}
    for name, seed, run in grid.runs(root) + grid.evaluated_elsewhere(root):
        try:
            saved = json.loads((run / EVAL).read_text())
        except (OSError, ValueError):
            continue
        curves.setdefault(name, {})[seed] = validation_curve(run)
        for r in saved["results"]:
            if r["k_test"] in grid.k_test:
                results.setdefault(name, {}).setdefault(r["k_test"], {})[seed] = (
                    r["accuracy"], r.get("per_episode", []))
    pairs = [(off, on, _by_k({k: (results.get(off, {}).get(k, {}), results.get(on, {}).get(k, {}))
                              for k in grid.k_test}))
             for off, on in compared_pairs(grid)]
    interactions = [(a, b, _by_k({k: (_per_seed_differences(results, a, k),
                                      _per_seed_differences(results, b, k))
                                  for k in grid.k_test}))
                    for a, b in grid.interaction]
    return Summary(results, pairs, curves, interactions)


def _by_k(sides: dict[int, tuple[dict, dict]]) -> dict[int, PairedDifference]:
    """K_test → the paired difference on − off of ``sides[k] = (off, on)``, each seed → (value,
    values per test episode), where they share a seed (no interval over episodes where a side
    has none)."""
    by_k = {}
    for k, (off, on) in sides.items():
        if set(off) & set(on):
            episodes = all(v[1] for v in [*off.values(), *on.values()])
            by_k[k] = paired_difference(
                {s: v[0] for s, v in off.items()}, {s: v[0] for s, v in on.items()},
                {s: v[1] for s, v in off.items()} if episodes else None,
                {s: v[1] for s, v in on.items()} if episodes else None,
            )
    return by_k


def _per_seed_differences(results: dict, pair: Pair, k: int
                          ) -> dict[int, tuple[float, list[float]]]:
    """Seed → (on − off, on − off per test episode) at K_test ``k``, on the seeds both have."""
    off, on = (results.get(name, {}).get(k, {}) for name in pair)
    out = {}
    for seed in set(off) & set(on):
        episodes = ([b - a for a, b in zip(off[seed][1], on[seed][1])]
                    if off[seed][1] and on[seed][1] else [])
        out[seed] = (on[seed][0] - off[seed][0], episodes)
    return out


def mean_curves(grid: Grid, summary: Summary) -> dict[str, tuple[list[int], np.ndarray,
                                                                   np.ndarray]]:
    """Per config with validation steps common to its seeds: :func:`mean_curve`."""
    curves = {name: mean_curve(summary.curves.get(name, {})) for name in grid.configs}
    return {name: curve for name, curve in curves.items() if curve[0]}


def mean_curve(by_seed: dict[int, dict[int, float]]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Steps every seed has, mean and (min, max) over the seeds of the validation accuracy."""
    steps = sorted(set.intersection(*(set(c) for c in by_seed.values()))) if by_seed else []
    if not steps:
        return [], np.zeros(0), np.zeros((2, 0))
    values = np.array([[c[s] for s in steps] for c in by_seed.values()])
    return steps, values.mean(0), np.stack([values.min(0), values.max(0)])


def _interval(interval) -> str:
    if not np.isfinite(interval.low):
        return "– (one seed)"
    return f"[{interval.low:+.2f}, {interval.high:+.2f}]"


def markdown(grid: Grid, summary: Summary, root: Path) -> str:
    total = len(grid.configs) * len(grid.seeds)
    evaluated = [(name, seed) for name, by_k in summary.results.items()
                 for seed in list(by_k.values())[0]]
    done = sum(seed in grid.seeds for _, seed in evaluated)
    extra = len(evaluated) - done
    lines = [
        f"# Sweep {root.name}",
        "",
        f"{done} of {total} runs evaluated ({len(grid.configs)} configs × seeds "
        f"{', '.join(map(str, grid.seeds))})"
        + (f", and {extra} of other seeds (trained by a call with other --seeds)" if extra else "")
        + f"; each on the same {grid.test_episodes} fixed "
        f"{grid.split} episodes per K_test (5 queries per episode), best validation checkpoint."
        + ("" if done == total else " **Partial: runs are missing.**"),
        "",
    ]
    return "\n".join(lines + _accuracy_tables(grid, summary) + _pair_tables(grid, summary)
                     + _curve_table(grid, summary))


def _accuracy_tables(grid: Grid, summary: Summary) -> list[str]:
    lines = [
        "## Accuracy (%): mean ± std over seeds (n seeds)",
        "",
        "| config | " + " | ".join(f"K_test {k}" for k in grid.k_test) + " |",
        "|---|" + "---:|" * len(grid.k_test),
    ]
    for name in grid.configs:
        cells = []
        for k in grid.k_test:
            values = [v[0] for v in summary.results.get(name, {}).get(k, {}).values()]
            if not values:
                cells.append("–")
            elif len(values) == 1:
                cells.append(f"{values[0]:.1f} (1)")
            else:
                cells.append(f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f} "
                             f"({len(values)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| config | " + " | ".join(SHOWN) + " |", "|---|" + "---|" * len(SHOWN)]
    for name, config in grid.configs.items():
        flat = flat_config(config)
        lines.append(f"| {name} | " + " | ".join(
            f"{flat[k]:g}" if isinstance(flat[k], float) else str(flat[k]) for k in SHOWN) + " |")
    return lines


def _pair_tables(grid: Grid, summary: Summary) -> list[str]:
    lines = [
        "",
        "## Paired differences on − off (points), by seed and by test episode",
        "",
        "Pairs: configs that differ only in β2 (off: β2 = 0, on: β2 > 0), then the grid's "
        "`compare` list.",
        "",
        "Verdict from the 95 % t-interval over seeds (training randomness included): gain if "
        "it lies above 0, loss if below, else no detectable difference. The interval over "
        "episodes (1.96·sd/√n of the per-episode difference, averaged over seeds) only holds "
        "the test sampling noise of these trained models.",
        "",
    ]
    if not summary.pairs and not summary.interactions:
        lines.append("No two configs of this grid differ only in β2, and it has no `compare` "
                     "list.")
        return lines
    tables = ([(f"{on} − {off}", by_k) for off, on, by_k in summary.pairs]
              + [(f"({b[1]} − {b[0]}) − ({a[1]} − {a[0]})", by_k)
                 for a, b, by_k in summary.interactions])
    cells = [(i, k) for i, (_, by_k) in enumerate(tables) for k in grid.k_test if k in by_k]
    adjusted = dict(zip(cells, holm_verdicts([tables[i][1][k] for i, k in cells])))
    lines += [
        f"Holm: the paired t-test's p-value of each of the report's {len(cells)} comparisons, "
        "adjusted (Holm 1979) so that all of them together keep a 5 % chance of any false gain "
        "or loss, and the verdict at that level. Seeds for 3 points: how many seeds the measured "
        "spread of the per-seed differences needs to detect a 3-point difference (two-sided "
        "α = 0.05, power 0.8, t-based).",
        "",
    ]
    for i, (title, by_k) in enumerate(tables):
        if i == len(summary.pairs):
            lines += ["## How a difference changes between two pairs", "",
                      "The grid's `interaction` list: per seed, the second pair's difference "
                      "minus the first's, on the seeds that all four configs have; a gain "
                      "means the second pair's on − off is larger.", ""]
        lines += [f"### {title}", "",
                  "| K_test | per seed | mean | 95 % over seeds | 95 % over episodes | verdict "
                  "| p (Holm) | verdict (Holm) | seeds for 3 points |",
                  "|---:|---|---:|---|---|---|---:|---|---:|"]
        for k in grid.k_test:
            if k not in by_k:
                lines.append(f"| {k} | – | – | – | – | no paired runs yet | – | – | – |")
                continue
            d = by_k[k]
            per_seed = ", ".join(f"{s}: {v:+.1f}" for s, v in zip(d.seeds, d.per_seed))
            episodes = _interval(d.over_episodes) if d.over_episodes else "–"
            p, holm_verdict = adjusted[(i, k)]
            needed = seeds_needed(d.sd)
            lines.append(f"| {k} | {per_seed} | {d.over_seeds.mean:+.2f} | "
                         f"{_interval(d.over_seeds)} | {episodes} | {d.verdict} | {p:.3g} | "
                         f"{holm_verdict} | {needed if needed is not None else '–'} |")
        lines.append("")
    return lines


def _curve_table(grid: Grid, summary: Summary) -> list[str]:
    lines = []
    curves = mean_curves(grid, summary)
    steps = sorted({s for c in curves.values() for s in c[0]})
    if steps:
        shown = steps[::max(1, -(-len(steps) // 12))]  # at most 12 columns
        lines += ["## Validation accuracy (%) during training, mean over seeds", "",
                  "At each config's own K, on its fixed validation episodes.", "",
                  "| config | " + " | ".join(f"{s}" for s in shown) + " |",
                  "|---|" + "---:|" * len(shown)]
        for name, (at, mean, _) in curves.items():
            value = dict(zip(at, mean))
            lines.append(f"| {name} | " + " | ".join(
                f"{value[s]:.1f}" if s in value else "–" for s in shown) + " |")
        lines += ["", "![validation accuracy during training](validation_curves.png)", ""]
    lines += ["![accuracy against K_test](accuracy_vs_k.png)", ""]
    if summary.pairs:
        lines += ["![paired differences](bootstrap_differences.png)", ""]
    return lines


def _save(fig, ax, path: Path, xlabel: str, ylabel: str) -> None:
    """Label, grid, legend (when something is drawn), save and close one figure."""
    from matplotlib import pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing evaluated yet: an empty plot, no legend
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot(grid: Grid, summary: Summary, root: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    paths = [root / "accuracy_vs_k.png"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name in grid.configs:
        by_k = summary.results.get(name, {})
        ks = [k for k in grid.k_test if by_k.get(k)]
        if not ks:
            continue
        values = [[v[0] for v in by_k[k].values()] for k in ks]
        ax.errorbar(ks, [np.mean(v) for v in values],
                    yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in values],
                    marker="o", capsize=3, label=name)
    _save(fig, ax, paths[0], "K_test (examples per class before the query)",
          f"{grid.split} accuracy (%), mean ± std over seeds")
    curves = mean_curves(grid, summary)
    if curves:
        paths.append(root / "validation_curves.png")
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        for name, (steps, mean, band) in curves.items():
            line, = ax.plot(steps, mean, label=f"{name} ({len(summary.curves[name])})")
            ax.fill_between(steps, band[0], band[1], color=line.get_color(), alpha=0.15)
        _save(fig, ax, paths[-1], "training step",
              "validation accuracy (%), mean and range over seeds")
    if summary.pairs:
        paths.append(root / "bootstrap_differences.png")
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        width = 0.8 / len(summary.pairs)
        for i, (off, on, by_k) in enumerate(summary.pairs):
            ks = [k for k in grid.k_test if k in by_k]
            shift = (i - (len(summary.pairs) - 1) / 2) * width
            x = np.array([grid.k_test.index(k) for k in ks]) + shift
            means = np.array([by_k[k].over_seeds.mean for k in ks])
            half = np.array([by_k[k].over_seeds.half_width if by_k[k].over_seeds.n > 1 else 0
                             for k in ks])
            ax.errorbar(x, means, yerr=half, fmt="o", capsize=4, label=f"{on} − {off}")
            for xi, k in zip(x, ks):
                ax.scatter([xi] * len(by_k[k].per_seed), by_k[k].per_seed, s=8, color="grey")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(grid.k_test)), [str(k) for k in grid.k_test])
        _save(fig, ax, paths[-1], "K_test",
              "accuracy difference (points), 95 % t-interval over seeds")
    return paths


def write_report(root: Path, grid: Grid) -> Path:
    """Write ``root/report.md`` and its plots from what is evaluated so far; returns its path."""
    summary = summarise(grid, root)
    path = root / "report.md"
    path.write_text(markdown(grid, summary, root))
    plot(grid, summary, root)
    return path
