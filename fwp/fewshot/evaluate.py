"""Accuracy at K_test shots on fixed, seeded episodes: the 95 % confidence interval over episodes
and, with repeats, the standard deviation over repeats (the seed paper's ±)."""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path

import torch

from fwp.data import EpisodeSampler, FewShotDataset, load_dataset
from fwp.errors import UserError
from fwp.fewshot.checkpoint import BEST, CHECKPOINT, check_matches, load_checkpoint, load_state
from fwp.fewshot.config import RunConfig
from fwp.fewshot.model import FewShotLearner

EVAL_SEED = 20_230_501  # test episodes: the same for every run, model and process
VAL_SEED = 7_654_321  # validation episodes during training


def load_split(config: RunConfig, split: str, data_root: str | None = None) -> FewShotDataset:
    root = data_root if data_root is not None else config.data.data_root
    return load_dataset(config.data.dataset, root or None, split=split, **config.data.data_options)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA; nothing on CPU (bf16 matmuls there are slower and less exact)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def evaluate(
    model: FewShotLearner,
    dataset: FewShotDataset,
    n_way: int,
    k_shot: int,
    episodes: int,
    n_query: int = 1,
    seed: int = EVAL_SEED,
    batch_size: int = 50,
    amp: bool = False,
    per_episode: bool = False,
    single_query: bool = False,
    repeats: int = 1,
) -> dict[str, float]:
    """Accuracy (%) over ``repeats`` × ``episodes`` fixed episodes of ``seed``; repeat r is
    episodes r·n … (r+1)·n − 1 (n = ``episodes``), so every repeat sees new episodes.

    Each episode: N·K labelled examples, then N·Q queries each predicted from the support state
    (``single_query``: only the first of them, as the public code). Returns the mean over all
    episodes of their query accuracy, its std over episodes, the 95 % interval 1.96·std/√(R·n)
    over all episodes, the mean query cross-entropy and, when ``repeats`` > 1, the accuracy of
    each repeat and their standard deviation (ddof 0, as ``np.std`` in the public eval script:
    the ± of the seed paper's tables); with ``per_episode`` also each episode's accuracy
    (``"per_episode"``, in episode order: paired comparisons between runs).
    """
    sampler = EpisodeSampler(dataset, n_way, k_shot, n_query=n_query, seed=seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    accuracies, losses = [], []
    total = episodes * repeats
    queries = 1 if single_query else None
    try:
        for start in range(0, total, batch_size):
            batch = sampler.batch(range(start, min(start + batch_size, total))).to(device)
            query_images, query_labels = (
                batch.query_images[:, :queries], batch.query_labels[:, :queries])
            with autocast(device, amp):
                state = model.observe(batch.support_images, batch.support_labels)
                logits = model.predict(query_images, state).float()
            correct = (logits.argmax(-1) == query_labels).float()
            accuracies.append(correct.mean(-1).cpu())
            losses.append(
                torch.nn.functional.cross_entropy(
                    logits.flatten(0, 1), query_labels.flatten(), reduction="none"
                ).view_as(correct).mean(-1).cpu()
            )
    finally:
        model.train(was_training)
    acc = torch.cat(accuracies).double().numpy() * 100
    std = float(acc.std(ddof=1)) if len(acc) > 1 else 0.0
    result = {
        "k_test": k_shot,
        "episodes": int(len(acc)),
        "accuracy": float(acc.mean()),
        "std": std,
        "ci95": 1.96 * std / math.sqrt(len(acc)),
        "loss": float(torch.cat(losses).mean()),
    }
    if per_episode:
        result["per_episode"] = acc.tolist()
    if repeats > 1:
        per_repeat = acc.reshape(repeats, episodes).mean(axis=1)
        result.update(repeats=repeats, repeat_accuracies=per_repeat.tolist(),
                      repeat_std=float(per_repeat.std()))
    return result


def load_trained(run: Path, config: RunConfig, which: str = "best") -> tuple[FewShotLearner, dict]:
    """The run's model from ``best.pt`` (or ``checkpoint.pt``: ``which="last"``), on CPU."""
    if which not in ("best", "last"):
        raise UserError(f"--checkpoint must be best or last, got {which!r}")
    path = run / (BEST if which == "best" else CHECKPOINT)
    if which == "best" and not path.is_file() and (run / CHECKPOINT).is_file():
        path = run / CHECKPOINT
    checkpoint = load_checkpoint(path)
    check_matches(checkpoint, config, path)
    image_shape = tuple(checkpoint["image_shape"])
    model = FewShotLearner(config, image_shape)
    load_state(model, checkpoint["model"], path)
    return model, {"path": path.name, "step": checkpoint["step"]}

