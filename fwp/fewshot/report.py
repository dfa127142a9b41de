"""Tables and plots of evaluated runs, like the seed paper's Tables 1–2.

Runs whose configs differ only by ``seed`` (and by where or how they ran: device, threads,
amp) form one group, reported as mean ± std over seeds; a group of one run shows the std over
its evaluation repeats when it was evaluated with ``--repeats`` > 1 (the seed paper's ±), else
its 95 % confidence interval over test episodes. The table says which for each group.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fwp.config import flat
from fwp.errors import UserError
from fwp.fewshot.checkpoint import read_config
from fwp.fewshot.config import RunConfig

NOT_GROUPING = ("seed", "device", "threads", "amp", "log_every", "test_episodes", "test_repeats")


@dataclass
class Group:
    """Runs of one configuration (up to the seed) and their accuracies per K_test."""

    key: tuple
    settings: dict[str, object]
    runs: list[Path] = field(default_factory=list)
    results: list[dict[int, dict]] = field(default_factory=list)  # per run: K_test → result
    label: str = ""

    def spread(self) -> str:
        """What the ± of this group's cells is."""
        if len(self.runs) > 1:
            return f"std over {len(self.runs)} seeds"
        repeats = {r.get("repeats", 1) for res in self.results for r in res.values()}
        if repeats == {1}:
            return "95 % CI over episodes"
        return f"std over {'/'.join(map(str, sorted(repeats)))} repeats"

    def cell(self, k: int) -> tuple[float, float] | None:
        """(mean accuracy, spread): std over seeds, or for a single run the std over its
        evaluation repeats (if any), else its CI over episodes."""
        values = [r[k] for r in self.results if k in r]
        if not values:
            return None
        if len(values) == 1:
            return values[0]["accuracy"], values[0].get("repeat_std", values[0]["ci95"])
        accuracies = np.array([v["accuracy"] for v in values])
        return float(accuracies.mean()), float(accuracies.std(ddof=1))


def eval_file(split: str) -> str:
    return f"eval_{split}.json"


def collect(runs: list[Path], split: str = "test") -> list[Group]:
    """Read each run's config and evaluation, group them, and label the groups by what differs."""
    groups: dict[tuple, Group] = {}
    for run in runs:
        settings = flat(RunConfig, read_config(run))
        path = run / eval_file(split)
        if not path.is_file():
            raise UserError(
                f"{run} has no {eval_file(split)}; run `fwp fewshot eval {run} --split {split}` "
                "first"
            )
        evaluation = json.loads(path.read_text())
        key = tuple(
            (k, json.dumps(v, sort_keys=True) if isinstance(v, dict) else v)
            for k, v in settings.items() if k not in NOT_GROUPING
        )
        group = groups.setdefault(key, Group(key, settings))
        group.runs.append(run)
        group.results.append({r["k_test"]: r for r in evaluation["results"]})
    ordered = list(groups.values())
    varying = [
        name for name, _ in ordered[0].key
        if len({dict(g.key)[name] for g in ordered}) > 1
    ] if len(ordered) > 1 else []
    for group in ordered:
        differs = ", ".join(f"{name}={group.settings[name]:g}" if isinstance(
            group.settings[name], float) else f"{name}={group.settings[name]}" for name in varying)
        if len(group.runs) == 1:
            name = group.runs[0].name
            group.label = f"{name} ({differs})" if differs else name
        else:
            group.label = f"{differs or group.runs[0].name} ({len(group.runs)} seeds)"
    return ordered


def markdown(groups: list[Group], split: str) -> str:
    ks = sorted({k for g in groups for r in g.results for k in r})
    lines = [
        f"Accuracy (%) on fixed {split} episodes against the number of shots K_test. One run: "
        "mean ± 95 % CI over episodes (1.96·std/√n), or mean ± std over evaluation repeats "
        "when evaluated with --repeats (the seed paper's ±); several seeds: mean ± std over "
        "seeds. Column ± of the second table says which each group shows.",
        "",
        "| K_test | " + " | ".join(g.label for g in groups) + " |",
        "|---:|" + "---:|" * len(groups),
    ]
    for k in ks:
        cells = []
        for g in groups:
            value = g.cell(k)
            cells.append("–" if value is None else f"{value[0]:.1f} ± {value[1]:.1f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["",
              "| group | runs | episodes | ± | model | N-way | K | K′ | β1 | β2 | β3 | distill |",
              "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for g in groups:
        s = g.settings
        episodes = sorted({r["episodes"] for res in g.results for r in res.values()})
        lines.append(
            f"| {g.label} | {', '.join(r.name for r in g.runs)} | "
            f"{'/'.join(map(str, episodes))} | {g.spread()} | {s['model']} | {s['n_way']} | "
            f"{s['k_shot']} | "
            f"{s['k_extra'] if s['beta2'] or s['beta3'] else '–'} | {s['beta1']:g} | "
            f"{s['beta2']:g} | {s['beta3']:g} | {s['distill'] if s['beta2'] else '–'} |"
        )
    return "\n".join(lines) + "\n"


def plot(groups: list[Group], path: Path, split: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for g in groups:
        ks = sorted({k for r in g.results for k in r})
        cells = [g.cell(k) for k in ks]
        ax.errorbar(ks, [c[0] for c in cells], yerr=[c[1] for c in cells], marker="o",
                    capsize=3, label=g.label)
    ax.set_xlabel("K_test (examples per class seen before the query)")
    ax.set_ylabel(f"{split} accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(runs: list[Path], out: Path, split: str = "test") -> tuple[Path, Path]:
    """``out/report.md`` and ``out/accuracy_vs_k.png`` (episodic runs) or the plot of the first
    run of another protocol; returns their paths."""
    from fwp.fewshot.protocols.report import is_protocol_run, protocol_sections

    episodic = [run for run in runs if not is_protocol_run(run, split)]
    others = [run for run in runs if is_protocol_run(run, split)]
    out.mkdir(parents=True, exist_ok=True)
    table, figure = out / "report.md", out / "accuracy_vs_k.png"
    text = f"# Few-shot report ({split})\n\n"
    if episodic:
        groups = collect(episodic, split)
        text += markdown(groups, split) + f"\n![accuracy against K_test]({figure.name})\n"
        plot(groups, figure, split)
    if others:
        sections, figures = protocol_sections(others, out, split)
        text += ("\n" if episodic else "") + sections
        figure = figure if episodic else figures[0]
    table.write_text(text)
    return table, figure
