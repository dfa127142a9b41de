"""Meta-continual learning in context (Irie, Csordás & Schmidhuber, "Automating Continual
Learning"; public code: the ``automated-cl`` repository, its ``use_ab_v2`` / ``use_acl`` setting).

The learner reads task A's N·K labelled examples (labels given with the images, as in the
episodic setting), then task B's — another N-way task with a fresh class → label map, here from
a second data set — continuing the same state. With W_A the state after A and W_AB after A then
B, it is queried on both tasks:

    L = w_A·CE(A | W_A) + CE(B | W_AB) + λ·CE(A | W_AB)

The last term, weighted by ``forget_weight`` λ, asks the learner to still classify A's queries
after learning B: it learns not to forget in context. With λ = 0 this is the plain two-task
loss. The public code scales the first task's loss by 0.1 (``loss_scale_task_a``, our
``first_task_weight``) and divides the sum by the number of terms; we do not divide, so that
λ = 0 gives the plain loss exactly (Adam is insensitive to a constant factor).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from fwp.data.streams import Stream, StreamSampler
from fwp.fewshot.model import FewShotLearner
from fwp.layers import clone_state

# The three numbers of the paper and one more: B learnt alone, from the start.
QUERIES = ("A|A", "A|AB", "B|AB", "B|B")


def continual_logits(model: FewShotLearner, stream: Stream, alone: bool = False
                     ) -> dict[str, torch.Tensor]:
    """Query logits ``[B, N·Q, N]``: "A|A" (A's queries after A), "B|AB" and "A|AB" (after A
    then B); with ``alone`` also "B|B" (B's queries after B alone).

    ``stream`` has two untrimmed segments with queries. All images go through the backbone in
    one batch.
    """
    B, T = stream.labels.shape
    half = T // 2
    n_query = stream.query_labels.shape[-1]
    images = torch.cat([stream.images, stream.query_images.flatten(1, 2)], 1)
    features = model.features(images)
    support, queries = features.split([T, 2 * n_query], 1)
    query_a, query_b = queries.split(n_query, 1)
    state_a = model.observe_features(support[:, :half], stream.labels[:, :half])
    state_ab = model.observe_features(support[:, half:], stream.labels[:, half:],
                                      clone_state(state_a))
    logits = {
        "A|A": model.predict_features(query_a, state_a),
        "A|AB": model.predict_features(query_a, state_ab),
        "B|AB": model.predict_features(query_b, state_ab),
    }
    if alone:
        state_b = model.observe_features(support[:, half:], stream.labels[:, half:])
        logits["B|B"] = model.predict_features(query_b, state_b)
    return logits


def continual_loss(
    logits: dict[str, torch.Tensor],
    query_labels: torch.Tensor,
    *,
    first_task_weight: float = 1.0,
    forget_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """w_A·CE(A | W_A) + CE(B | W_AB) + λ·CE(A | W_AB), each CE averaged over queries.

    Args:
        logits: ``"A|A"``, ``"B|AB"``, ``"A|AB"`` query logits ``[B, Q, N]``.
        query_labels: ``[B, 2, Q]``: A's and B's query labels.
        first_task_weight: w_A; forget_weight: λ (0: the term is not even computed).

    Returns ``(loss, parts)`` with the unweighted terms ``"A|A"``, ``"B|AB"`` (and ``"A|AB"``).
    """
    labels_a, labels_b = query_labels[:, 0], query_labels[:, 1]

    def ce(name: str, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits[name].flatten(0, 1).float(), labels.flatten())

    parts = {"A|A": ce("A|A", labels_a), "B|AB": ce("B|AB", labels_b)}
    loss = first_task_weight * parts["A|A"] + parts["B|AB"]
    if forget_weight:
        parts["A|AB"] = ce("A|AB", labels_a)
        loss = loss + forget_weight * parts["A|AB"]
    return loss, parts


@torch.no_grad()
def evaluate_continual(
    model: FewShotLearner,
    sampler: StreamSampler,
    episodes: int,
    *,
    domain_names: list[str],
    batch_size: int = 50,
    amp: bool = False,
) -> dict[str, Any]:
    """acc(A|A), acc(A|A→B), acc(B|A→B) and acc(B|B) (%) on episodes ``0 … episodes−1``, with
    95 % intervals over episodes, overall and per order of the two data sets.

    ``accuracy`` (used to keep the best checkpoint) is the mean of the first three; ``forgetting``
    is acc(A|A) − acc(A|A→B).
    """
    from fwp.fewshot.evaluate import autocast

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    per_query: dict[str, list[torch.Tensor]] = {name: [] for name in QUERIES}
    plans, losses = [], []
    try:
        for start in range(0, episodes, batch_size):
            stream = sampler.batch(range(start, min(start + batch_size, episodes))).to(device)
            with autocast(device, amp):
                logits = continual_logits(model, stream, alone=True)
            for name in QUERIES:
                labels = stream.query_labels[:, 0 if name.startswith("A") else 1]
                per_query[name].append((logits[name].argmax(-1) == labels).float().mean(-1).cpu())
            loss, _ = continual_loss({k: v.float() for k, v in logits.items()},
                                     stream.query_labels, forget_weight=1.0)
            losses.append(loss.item() * len(stream))
            plans.append(stream.domains.cpu())
    finally:
        model.train(was_training)
    accuracy = {name: torch.cat(v).double().numpy() * 100 for name, v in per_query.items()}
    order_of = torch.cat(plans).numpy()

    def summary(rows: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {"episodes": int(rows.sum())}
        for name in QUERIES:
            values = accuracy[name][rows]
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            out[name] = {"accuracy": float(values.mean()),
                         "ci95": 1.96 * std / math.sqrt(len(values))}
        out["forgetting"] = out["A|A"]["accuracy"] - out["A|AB"]["accuracy"]
        return out

    everything = summary(np.ones(len(order_of), bool))
    result: dict[str, Any] = {
        "episodes": episodes,
        "accuracy": float(np.mean([everything[n]["accuracy"] for n in QUERIES[:3]])),
        "ci95": float(np.mean([everything[n]["ci95"] for n in QUERIES[:3]])),
        "loss": sum(losses) / episodes,
        "all": everything, "orders": [],
    }
    for plan in sampler.plans:
        rows = (order_of == np.array(plan)).all(1)
        if rows.any():
            result["orders"].append({"order": [domain_names[d] for d in plan], **summary(rows)})
    return result


def result_groups(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The groups a continual result is shown in: one per task order ("A → B" by data set),
    led by "all" when there are several (with one order, "all" would repeat it)."""
    groups = [(" → ".join(o["order"]), o) for o in result["orders"]]
    return groups if len(groups) == 1 else [("all", result["all"])] + groups
