"""Delayed labels and sequential multi-task adaptation (Irie et al., ICML 2022, Sec. 4.2).

The learner reads a stream of images x_1 … x_T and predicts the label of each one before it is
told it: the input at step t is Lin([features(x_t); onehot(y_{t−1})]) (at t = 1 the all-zero
"no label" input), and the prediction p_t = softmax(head(h_t)) is scored against y_t:

    L = mean over valid t of CE(y_t, p_t)

One segment on one data set is the delayed-label setting; two segments on two data sets, each
with its own class → label map, the sequential multi-task one: at the switch the learner is not
told anything (the label fed with the first image of the second task is the last one of the
first), and must notice the change from the images and labels alone. Accuracy is reported by
how many images of its class the learner has been shown before in the segment (the paper's
"k-th instance" plots) and against the position in the stream, per task and per order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from fwp.data.streams import Stream, StreamSampler
from fwp.fewshot.model import FewShotLearner


def delayed_label_input(labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """``[B, T]`` labels → ``[B, T, N]`` label inputs: 0 at t = 0, onehot(y_{t−1}) after."""
    out = torch.zeros(*labels.shape, n_way)
    out[:, 1:] = F.one_hot(labels[:, :-1], n_way).float()
    return out


def stream_features(model: FewShotLearner, images: torch.Tensor, valid: torch.Tensor
                    ) -> torch.Tensor:
    """Backbone features ``[B, T, F]`` of the valid images only (zeros at padding), so that
    padding never enters BatchNorm's batch statistics."""
    flat = model.backbone(images[valid])
    out = flat.new_zeros(*valid.shape, flat.shape[-1])
    out[valid] = flat
    return out


def stream_logits(model: FewShotLearner, stream: Stream) -> torch.Tensor:
    """Logits ``[B, T, N]`` of every step, each predicted before its label is given."""
    features = stream_features(model, stream.images, stream.valid)
    label_input = delayed_label_input(stream.labels, model.n_way).to(features)
    return model.step_logits(features, label_input)


def stream_loss(logits: torch.Tensor, stream: Stream) -> tuple[torch.Tensor, float]:
    """Mean cross-entropy over the valid steps, and their accuracy (a fraction)."""
    valid = stream.valid
    logits, labels = logits[valid].float(), stream.labels[valid]
    accuracy = (logits.argmax(-1) == labels).float().mean().item()
    return F.cross_entropy(logits, labels), accuracy


def _mean_ci(per_stream: np.ndarray) -> tuple[float, float]:
    """Mean (%) over streams and the 95 % interval 1.96·std/√n; NaN streams (nothing to count)
    left out."""
    values = per_stream[~np.isnan(per_stream)] * 100
    if not len(values):
        return float("nan"), float("nan")
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), 1.96 * std / math.sqrt(len(values))


def _per_stream_mean(correct: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``[B, T]`` → ``[B]``: the mean of ``correct`` where ``mask``, NaN where mask is empty."""
    counts = mask.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, (correct * mask).sum(1) / np.maximum(counts, 1), np.nan)


@torch.no_grad()
def evaluate_streams(
    model: FewShotLearner,
    sampler: StreamSampler,
    episodes: int,
    *,
    domain_names: list[str],
    batch_size: int = 50,
    amp: bool = False,
) -> dict[str, Any]:
    """Accuracy on streams ``0 … episodes−1`` of ``sampler``, one result per domain order.

    Returns ``{"accuracy", "ci95", "loss", "orders": [...]}``: for each order of the domains,
    ``{"order": [names], "accuracy", "ci95", "by_position": [T], "tasks": [per segment:
    {"dataset", "accuracy", "ci95", "by_instance": [K], "by_instance_ci95": [K]}]}``; the
    instance list starts at the first image of a class (instance 1). Overall numbers are over
    all steps of all orders.
    """
    from fwp.fewshot.evaluate import autocast

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct_all, valid_all, segment_all, instance_all, losses, plans = [], [], [], [], [], []
    try:
        for start in range(0, episodes, batch_size):
            stream = sampler.batch(range(start, min(start + batch_size, episodes))).to(device)
            with autocast(device, amp):
                logits = stream_logits(model, stream).float()
            loss = F.cross_entropy(logits.flatten(0, 1), stream.labels.flatten(),
                                   reduction="none").view_as(stream.labels)
            valid = stream.valid.float()
            losses.append(((loss * valid).sum(1) / valid.sum(1)).cpu())
            correct_all.append((logits.argmax(-1) == stream.labels).cpu())
            valid_all.append(stream.valid.cpu())
            segment_all.append(stream.segment.cpu())
            instance_all.append(stream.instance.cpu())
            plans.append(stream.domains.cpu())
    finally:
        model.train(was_training)
    correct = torch.cat(correct_all).numpy().astype(np.float64)
    valid = torch.cat(valid_all).numpy()
    segment = torch.cat(segment_all).numpy()
    instance = torch.cat(instance_all).numpy()
    order_of = torch.cat(plans).numpy()
    overall, ci = _mean_ci(_per_stream_mean(correct, valid))
    result: dict[str, Any] = {
        "episodes": episodes, "accuracy": overall, "ci95": ci,
        "loss": float(torch.cat(losses).mean()), "orders": [],
    }
    for plan in sampler.plans:
        rows = (order_of == np.array(plan)).all(1)
        if not rows.any():
            continue
        c, v, s, k = correct[rows], valid[rows], segment[rows], instance[rows]
        acc, acc_ci = _mean_ci(_per_stream_mean(c, v))
        entry: dict[str, Any] = {
            "order": [domain_names[d] for d in plan], "streams": int(rows.sum()),
            "accuracy": acc, "ci95": acc_ci,
            "by_position": [float(x) * 100 for x in (c * v).sum(0) / np.maximum(v.sum(0), 1)],
            "tasks": [],
        }
        for seg, d in enumerate(plan):
            in_seg = v & (s == seg)
            task_acc, task_ci = _mean_ci(_per_stream_mean(c, in_seg))
            by_instance = [_mean_ci(_per_stream_mean(c, in_seg & (k == j)))
                           for j in range(sampler.k_shot)]
            entry["tasks"].append({
                "dataset": domain_names[d], "accuracy": task_acc, "ci95": task_ci,
                "by_instance": [m for m, _ in by_instance],
                "by_instance_ci95": [e for _, e in by_instance],
            })
        result["orders"].append(entry)
    return result
