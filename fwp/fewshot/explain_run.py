"""``fwp fewshot explain``: one query of a trained run explained (:mod:`fwp.fewshot.explain`)
and drawn (:mod:`fwp.fewshot.plots`) into a folder."""

from __future__ import annotations

from pathlib import Path

from fwp.config import write_atomic
from fwp.errors import UserError
from fwp.fewshot.checkpoint import read_config
from fwp.fewshot.evaluate import EVAL_SEED, load_split, load_trained
from fwp.fewshot.explain import (
    FAST_WEIGHT_LAYERS,
    NEEDS_FAST_WEIGHTS,
    Explanation,
    explain_episode,
)
from fwp.fewshot.plots import draw_attribution, draw_fast_weights


def explain_run(
    run: Path,
    out: Path,
    *,
    episode_seed: int = EVAL_SEED,
    episode: int = 0,
    query: int = 0,
    split: str = "test",
    data_root: str | None = None,
    k_shot: int | None = None,
    checkpoint: str = "best",
    layer: int | None = None,
    head: int = 0,
) -> Explanation:
    """Explain query ``query`` of episode ``episode`` (seed ``episode_seed``, one query per class,
    the run's N-way, ``k_shot`` shots or the run's K) and write ``out/explain.json``,
    ``out/attribution.png`` and ``out/fast_weights.png`` (block ``layer``, default the last,
    head ``head``). Runs on CPU in float64 with the reference operators."""
    from fwp.data import EpisodeSampler

    config = read_config(run)
    if config.network.model not in FAST_WEIGHT_LAYERS.values():
        raise UserError(
            f"{NEEDS_FAST_WEIGHTS}; {run} has a {config.network.model} core. Train one with "
            "`fwp fewshot train --model srwm` (or deltanet, linear)"
        )
    if config.protocol.protocol != "episodic":
        raise UserError(
            f"{run} is a {config.protocol.protocol} run; explain splits an episodic query over "
            "its support set, an input this run was not trained on: explain an episodic run"
        )
    n_layers, n_heads = config.network.layers, config.network.heads
    layer = n_layers - 1 if layer is None else layer
    if not 0 <= layer < n_layers:
        raise UserError(f"--layer {layer} is outside the core's blocks 0 … {n_layers - 1}")
    if not 0 <= head < n_heads:
        raise UserError(f"--head {head} is outside the block's heads 0 … {n_heads - 1}")
    n_way = config.data.n_way
    if episode < 0:
        raise UserError(f"--episode must be ≥ 0 (got {episode})")
    if not 0 <= query < n_way:
        raise UserError(f"--query {query} is outside the episode's queries 0 … {n_way - 1}")
    k_shot = config.data.k_shot if k_shot is None else k_shot
    config.network.core_mode = "recurrent"  # the reference operators: exact in float64
    model, source = load_trained(run, config, checkpoint)
    model.double().eval()
    dataset = load_split(config, split, data_root)
    sampler = EpisodeSampler(dataset, n_way, k_shot, n_query=1, seed=episode_seed)
    batch = sampler.episode(episode)
    explanation = explain_episode(
        model, batch.support_images[0], batch.support_labels[0],
        batch.query_images[0, query], int(batch.query_labels[0, query]),
    )
    class_names = [dataset.class_names[c] for c in batch.classes[0].tolist()]
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "explain.json", {
        "run": str(run), "checkpoint": source, "split": split, "episode_seed": episode_seed,
        "episode": episode, "query": query, "n_way": n_way, "k_shot": k_shot,
        "class_names": class_names, **explanation.to_json(),
    })
    draw_attribution(
        explanation, batch.support_images[0], batch.query_images[0, query], class_names,
        out / "attribution.png",
    )
    draw_fast_weights(explanation, layer, head, out / "fast_weights.png")
    return explanation
