"""The few-shot pictures: an episode (``fwp fewshot inspect``), and an explanation's attribution
and fast weights (``fwp fewshot explain``). Computation lives elsewhere
(:mod:`fwp.fewshot.explain`); these functions only draw what they are given."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from fwp.data import Episode
    from fwp.fewshot.explain import Explanation


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _rgb(image: torch.Tensor) -> torch.Tensor:
    """``[C, H, W]`` in [0, 1] → ``[H, W, 3]``."""
    return image.float().permute(1, 2, 0).expand(*image.shape[1:], 3)


def draw_episode(episode: Episode, class_names: list[str], out: Path) -> None:
    """Episode 0 of the batch as a grid: one row per label, support | extra | query columns."""
    import numpy as np

    plt = _pyplot()

    sections = [
        (name, getattr(episode, f"{name}_images")[0], getattr(episode, f"{name}_labels")[0])
        for name in ("support", "extra", "query")
    ]
    sections = [(name, images, labels) for name, images, labels in sections if len(labels)]
    n = len(class_names)
    c, h, w = sections[0][1].shape[1:]
    pad, gap = 2, 12
    widths = [int((labels == 0).sum()) for _, _, labels in sections]
    total_w = sum(k * (w + pad) for k in widths) + gap * (len(sections) - 1)
    canvas = np.ones((n * (h + pad), total_w, 3), np.float32)
    x0, centres = 0, []
    for (_, images, labels), k in zip(sections, widths):
        for label in range(n):
            for j, image in enumerate(images[labels == label]):
                y, x = label * (h + pad), x0 + j * (w + pad)
                canvas[y : y + h, x : x + w] = image.permute(1, 2, 0).expand(h, w, 3).numpy()
        centres.append(x0 + k * (w + pad) / 2)
        x0 += k * (w + pad) + gap
    scale = 0.02
    fig, ax = plt.subplots(
        figsize=(max(4.0, total_w * scale + 3.5), max(2.0, n * (h + pad) * scale + 0.8))
    )
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks(centres, [name for name, _, _ in sections])
    ax.xaxis.tick_top()
    ax.set_yticks(
        [i * (h + pad) + h / 2 for i in range(n)],
        [f"{i}: {name[:38]}" for i, name in enumerate(class_names)],
        fontsize=7,
    )
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.tight_layout()
    fig.savefig(out, dpi=150, bbox_inches="tight")
    plt.close(fig)


def draw_attribution(
    explanation: Explanation,
    support_images: torch.Tensor,
    query_image: torch.Tensor,
    class_names: list[str],
    path: Path,
) -> None:
    """Support images by label (columns) and shot (rows), each framed in the colour of its
    all-blocks effect; the query with its true and predicted label; per block, the effect of
    removing each label's writes."""
    plt = _pyplot()
    from matplotlib.colors import Normalize

    labels, effects = explanation.support_labels, explanation.effects
    n_way = len(explanation.logits)
    columns = [torch.nonzero(labels == c).flatten().tolist() for c in range(n_way)]
    shots = max(len(column) for column in columns)
    _, h, w = support_images.shape[1:]
    border, strip = max(2, h // 10), max(8, h // 3)
    cell_h, cell_w = h + 2 * border + strip, w + 2 * border + 2
    canvas = torch.ones(shots * cell_h, n_way * cell_w, 3)
    limit = float(effects.abs().max()) or 1.0
    norm, cmap = Normalize(-limit, limit), plt.get_cmap("RdBu_r")
    for c, column in enumerate(columns):
        for j, t in enumerate(column):
            y, x = j * cell_h, c * cell_w
            colour = torch.tensor(cmap(norm(float(effects[t])))[:3])
            canvas[y : y + h + 2 * border, x : x + w + 2 * border] = colour
            canvas[y + border : y + border + h, x + border : x + border + w] = _rgb(
                support_images[t]
            )

    # Inches per pixel: cells at most 1.6 in wide, the grid at most 12 in wide and 11 in tall.
    scale = min(1.6 / cell_w, 12 / (n_way * cell_w), 11 / (shots * cell_h))
    fig = plt.figure(figsize=(n_way * cell_w * scale + 3.5, max(4.5, shots * cell_h * scale + 1.8)))
    grid = fig.add_gridspec(2, 2, width_ratios=[n_way * cell_w * scale, 3.0],
                            height_ratios=[1, 1.4])
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(canvas.numpy(), interpolation="nearest")
    for c, column in enumerate(columns):
        for j, t in enumerate(column):
            ax.text(c * cell_w + border + w / 2, j * cell_h + h + 2 * border + strip / 2,
                    f"{float(effects[t]):+.2g}  (left out: "
                    f"{float(explanation.leave_one_out[t]):+.2g})",
                    ha="center", va="center", fontsize=6)
    ticks = []
    for c in range(n_way):
        marks = [m for m, hit in (("true", c == explanation.query_label),
                                  ("pred.", c == explanation.predicted)) if hit]
        ticks.append(f"label {c}" + (f" ({', '.join(marks)})" if marks else "")
                     + f"\n{class_names[c][:14]}")
    ax.set_xticks([c * cell_w + border + w / 2 for c in range(n_way)], ticks, fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks([j * cell_h + border + h / 2 for j in range(shots)],
                  [f"shot {j + 1}" for j in range(shots)], fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title("Support examples, framed by their effect on the predicted logit\n"
                 "(writes removed from every block; numbers under the images, and in brackets\n"
                 "the effect of running the episode without the example)", fontsize=9)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm, cmap), ax=ax, orientation="horizontal",
                       fraction=0.05, pad=0.04)
    bar.set_label("Δ logit of the predicted class (> 0: pushed towards it)", fontsize=8)
    bar.ax.tick_params(labelsize=7)

    _draw_query(fig.add_subplot(grid[0, 1]), explanation, query_image, class_names)
    _draw_label_effects(fig.add_subplot(grid[1, 1]), explanation, plt)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def _draw_query(ax_query, explanation: Explanation, query_image: torch.Tensor,
                class_names: list[str]) -> None:
    """The query image with its true and predicted label (green when right, red when wrong)."""
    true, predicted = explanation.query_label, explanation.predicted
    ax_query.imshow(_rgb(query_image).numpy(), interpolation="nearest")
    ax_query.set_xticks([])
    ax_query.set_yticks([])
    ax_query.set_title(
        f"query\ntrue: label {true} ({class_names[true][:14]})"
        f"\npredicted: label {predicted} ({class_names[predicted][:14]})",
        fontsize=8, color="darkgreen" if predicted == true else "darkred",
    )


def _draw_label_effects(ax_bars, explanation: Explanation, plt) -> None:
    """Per block and from all blocks: the effect of removing each label's writes."""
    n_way = len(explanation.logits)
    groups = [(f"block {b.index}", b.class_effects) for b in explanation.blocks]
    groups.append(("all", explanation.class_effects))
    width_bar = 0.8 / n_way
    palette = plt.get_cmap("tab10")
    for c in range(n_way):
        ax_bars.bar([g + (c - (n_way - 1) / 2) * width_bar for g in range(len(groups))],
                    [float(values[c]) for _, values in groups], width_bar,
                    color=palette(c % 10), label=f"label {c}")
    ax_bars.axhline(0, color="black", linewidth=0.6)
    ax_bars.set_xticks(range(len(groups)), [name for name, _ in groups], fontsize=7)
    ax_bars.set_ylabel("Δ logit of the predicted class", fontsize=8)
    ax_bars.set_title("writes of one label removed,\nper block and from all blocks", fontsize=8)
    ax_bars.tick_params(labelsize=7)
    ax_bars.legend(fontsize=6, ncols=2)


def draw_fast_weights(explanation: Explanation, layer: int, head: int, path: Path) -> None:
    """Heatmaps of W_t − W_0 for one head of block ``layer`` after each label's first shot and
    at the end of the support set, and ‖W_t − W_0‖_F against t."""
    plt = _pyplot()

    block = explanation.blocks[layer]
    change = (block.fast_weights[:, head] - block.fast_weights[:1, head]).float()
    labels = explanation.support_labels.tolist()
    T = len(labels)
    firsts = {labels.index(c) + 1: c for c in sorted(set(labels))}
    times = sorted({*firsts, T})
    limit = float(change[times].abs().max()) or 1.0
    rows, cols = change.shape[1:]

    fig = plt.figure(figsize=(max(7.0, 2.4 * len(times) + 1.0), 7.5))
    grid = fig.add_gridspec(2, len(times) + 1, width_ratios=[1] * len(times) + [0.06],
                            height_ratios=[1.5, 1], hspace=0.45)
    for i, t in enumerate(times):
        ax = fig.add_subplot(grid[0, i])
        image = ax.imshow(change[t].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit,
                          aspect="auto", interpolation="nearest")
        events = [f"first shot of label {firsts[t]}"] if t in firsts else []
        events += ["end of support"] if t == T else []
        ax.set_title(f"t = {t}\n" + " and ".join(events), fontsize=8)
        if block.layer == "srwm":
            d = cols
            for edge in (d, 2 * d, 3 * d):
                ax.axhline(edge - 0.5, color="black", linewidth=0.8)
            ax.set_yticks([d / 2 - 0.5, 1.5 * d - 0.5, 2.5 * d - 0.5, (3 * d + rows) / 2 - 0.5],
                          ["y", "k", "q", "β"] if i == 0 else [])
            ax.set_xlabel("input dim", fontsize=7)
        else:
            ax.set_xlabel("value dim" + (" (last: normaliser)" if block.layer == "linear" else ""),
                          fontsize=7)
            if i == 0:
                ax.set_ylabel("key feature", fontsize=7)
        ax.tick_params(labelsize=6)
    bar = fig.colorbar(image, cax=fig.add_subplot(grid[0, -1]))
    bar.set_label("W_t − W_0 (weight units)", fontsize=8)
    bar.ax.tick_params(labelsize=7)

    norms = change.flatten(1).norm(dim=1).numpy()
    ax = fig.add_subplot(grid[1, :-1])
    ax.plot(range(T + 1), norms, marker="o", markersize=3)
    for t in times:
        ax.axvline(t, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xticks(range(T + 1), ["start", *map(str, labels)], fontsize=6)
    palette = plt.get_cmap("tab10")
    for tick, c in zip(ax.get_xticklabels()[1:], labels):
        tick.set_color(palette(c % 10))
    ax.set_xlim(-0.5, T + 0.5)
    ax.set_xlabel("t = support examples written (tick: label of example t)", fontsize=8)
    ax.set_ylabel("‖W_t − W_0‖_F", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("size of the change against t (dotted: the heatmaps above)", fontsize=8)

    title = f"Block {block.index} ({block.layer}), head {head}: fast weights over the episode"
    if block.layer == "srwm":
        title += ("\nrows are [y; k; q; β] blocks (lines): the query's output reads the y rows, "
                  "the k, q, β rows make the next keys, queries and learning rates")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
