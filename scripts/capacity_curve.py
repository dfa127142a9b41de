"""Memory capacity of one fast weight layer: recall accuracy against the number of stored pairs.

The synthetic retrieval of Schlag, Irie & Schmidhuber (ICML 2021, §6.1, setting 1), at CPU
scale: an episode writes N key–value pairs with distinct keys, one pair per step, then asks one
of the keys; the layer's output at the query step is classified into the value. Step inputs are
[E(key); one-hot(value)] (the query step: [E(query); 0]), as in the public code
(``ischlag/fast-weight-transformers``, ``synthetic/``); episodes come from the ``recall`` task's
generator (:mod:`fwp.formal.tasks.recall`). One layer per update rule, one head of key
dimension ``--d-key``: sum rule (``linear``), delta rule (``deltanet``), ``mesa`` and softmax
attention (``transformer``, whose memory grows with N). A layer that stores pairs in a
d_key × d_value matrix should fall off once N passes d_key; attention should not.

    nice -n 5 python scripts/capacity_curve.py --out docs/img/capacity --seeds 1 2 3  # resumable

Each (layer, N, seed) writes ``OUT/results.json`` as soon as it finishes; a re-run skips those.
``OUT/capacity.png`` plots the mean over seeds with their range; ``OUT/report.md`` has the table
(mean ± std over seeds) and the paired differences of neighbouring rules at each N (delta − sum,
Mesa − delta, attention − Mesa; paired by seed, which fixes the test episodes too), with
Holm-adjusted verdicts (:mod:`fwp.stats`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fwp.config import write_atomic
from fwp.formal.tasks import Recall
from fwp.layers import build_layer
from fwp.stats import holm_verdicts, paired_difference

RULES = {
    "sum rule (linear)": ("linear", {}),
    "delta rule (deltanet)": ("deltanet", {"feature_map": "l2"}),
    "mesa": ("mesa", {}),
    "softmax attention": ("transformer", {}),
}


class Retriever(nn.Module):
    """[E(key); one-hot(value)] per step → one layer (one head of size d_key) → value logits."""

    def __init__(self, layer: str, options: dict, keys: int, values: int, d_key: int) -> None:
        super().__init__()
        self.values = values
        self.embed = nn.Embedding(keys, d_key)
        width = d_key + values
        self.layer = build_layer(layer, width, 1, head_dim=d_key, **options)
        self.head = nn.Linear(width, values)

    def forward(self, keys: torch.Tensor, values: torch.Tensor, query: torch.Tensor):
        """keys, values ``[B, N]``, query ``[B]`` → logits ``[B, values]`` at the query step."""
        steps = torch.cat([self.embed(keys), F.one_hot(values, self.values).float()], -1)
        asked = torch.cat([self.embed(query), torch.zeros(len(query), self.values)], -1)
        y, _ = self.layer(torch.cat([steps, asked[:, None]], dim=1))
        return self.head(y[:, -1])


def episodes(task: Recall, pairs: int, count: int, rng: np.random.Generator):
    """Tensors (keys, values, query, answer) of ``count`` episodes of the recall task."""
    keys, values, query, answer = [], [], [], []
    for _ in range(count):
        tokens = task.draw(pairs, rng).split()
        keys.append([int(t[1:]) for t in tokens[0:2 * pairs:2]])
        values.append([int(t[1:]) for t in tokens[1:2 * pairs:2]])
        query.append(int(tokens[-1][1:]))
        answer.append(int(task.answers(" ".join(tokens))[-1][1:]))
    return tuple(torch.tensor(x) for x in (keys, values, query, answer))


def run(rule: str, pairs: int, seed: int, args: argparse.Namespace) -> dict:
    layer, options = RULES[rule]
    torch.manual_seed(seed)
    task = Recall(keys=args.keys, values=args.values)
    model = Retriever(layer, options, args.keys, args.values, args.d_key)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for _ in range(args.steps):
        keys, values, query, answer = episodes(task, pairs, args.batch, rng)
        loss = F.cross_entropy(model(keys, values, query), answer)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test = episodes(task, pairs, args.test, np.random.default_rng(10_000 + pairs))
    with torch.no_grad():
        accuracy = (model(*test[:3]).argmax(-1) == test[3]).float().mean().item()
    return {"rule": rule, "pairs": pairs, "seed": seed, "accuracy": 100 * accuracy,
            "train_loss": loss.item(), "seconds": round(time.perf_counter() - start, 1)}


def by_point(results: list[dict]) -> dict[tuple[str, int], dict[int, float]]:
    """(rule, N) → seed → accuracy."""
    out: dict[tuple[str, int], dict[int, float]] = {}
    for r in results:
        out.setdefault((r["rule"], r["pairs"]), {})[r["seed"]] = r["accuracy"]
    return out


def plot(results: list[dict], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = by_point(results)
    seeds = sorted({r["seed"] for r in results})
    fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
    for rule in RULES:
        ns = sorted(n for r, n in points if r == rule)
        if not ns:
            continue
        accs = [list(points[(rule, n)].values()) for n in ns]
        line, = ax.plot(ns, [np.mean(a) for a in accs], marker="o", label=rule)
        if len(seeds) > 1:
            ax.fill_between(ns, [min(a) for a in accs], [max(a) for a in accs],
                            color=line.get_color(), alpha=0.2, linewidth=0)
    ax.axvline(args.d_key, color="grey", linestyle="--", linewidth=1)
    ax.text(args.d_key, 2, f" d_key = {args.d_key}", color="grey")
    ax.axhline(100 / args.values, color="grey", linestyle=":", linewidth=1)
    spread = f"mean and range over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else (
        f"seed {seeds[0]}")
    ax.set(xlabel="key–value pairs stored (N)", ylabel="recall accuracy (%)", ylim=(0, 102),
           title=f"one layer, one head, d_key = {args.d_key}, {args.steps} steps; {spread}")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(results: list[dict], args: argparse.Namespace) -> str:
    """The table (mean ± std over seeds) and the paired differences of neighbouring rules."""
    points = by_point(results)
    pairs = sorted({n for _, n in points})
    lines = ["| rule | " + " | ".join(f"N = {n}" for n in pairs) + " |",
             "|---|" + "---:|" * len(pairs)]
    for rule in RULES:
        cells = []
        for n in pairs:
            accs = list(points.get((rule, n), {}).values())
            cells.append("—" if not accs else f"{np.mean(accs):.1f}" + (
                f" ± {np.std(accs, ddof=1):.1f}" if len(accs) > 1 else ""))
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    rules = list(RULES)
    rows = [(rules[i + 1], rules[i], n) for i in range(len(rules) - 1) for n in pairs
            if (rules[i], n) in points and (rules[i + 1], n) in points]
    if rows:
        diffs = [paired_difference(points[(low, n)], points[(high, n)]) for high, low, n in rows]
        lines += ["", "Paired differences (points of accuracy, paired by seed; 95 % interval "
                  "over seeds; Holm over all rows):", "",
                  "| comparison | N | seeds | difference | interval | Holm p | verdict |",
                  "|---|---:|---:|---:|---|---:|---|"]
        for (high, low, n), d, (p, verdict) in zip(rows, diffs, holm_verdicts(diffs)):
            iv = d.over_seeds
            interval = f"[{iv.low:+.1f}, {iv.high:+.1f}]" if len(d.seeds) > 1 else "—"
            lines.append(f"| {high.split(' (')[0]} − {low.split(' (')[0]} | {n} | "
                         f"{len(d.seeds)} | {iv.mean:+.1f} | {interval} | {p:.3f} | {verdict} |")
    seconds = sum(r["seconds"] for r in results)
    lines += ["", f"{len(results)} runs, {seconds / 60:.1f} minutes of training (wall clock) "
              f"in all."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pairs", type=int, nargs="+", default=[4, 8, 12, 16, 24, 32, 48, 64])
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    parser.add_argument("--d-key", type=int, default=16)
    parser.add_argument("--keys", type=int, default=64)
    parser.add_argument("--values", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    if max(args.pairs) > args.keys:
        parser.error(f"--pairs up to {max(args.pairs)} need --keys >= {max(args.pairs)}")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    saved = json.loads(path.read_text()) if path.exists() else {"settings": {}, "results": []}
    if "seed" in saved["settings"]:  # a results.json of one seed, written before --seeds
        old_seed = saved["settings"].pop("seed")
        for r in saved["results"]:
            r.setdefault("seed", old_seed)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "pairs", "rules", "seeds")}
    if saved["results"] and saved["settings"] != settings:
        parser.error(f"{path} holds results of other settings {saved['settings']}; "
                     f"use another --out")
    saved["settings"] = settings
    done = {(r["rule"], r["pairs"], r["seed"]) for r in saved["results"]}
    for seed in args.seeds:
        for rule in args.rules:
            for pairs in args.pairs:
                if (rule, pairs, seed) in done:
                    continue
                result = run(rule, pairs, seed, args)
                print(json.dumps(result), flush=True)
                saved["results"].append(result)
                write_atomic(path, saved)
    plot(saved["results"], args, args.out / "capacity.png")
    text = report(saved["results"], args)
    write_atomic(args.out / "report.md", text)
    print(text)
    print(f"{args.out / 'capacity.png'}, {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
