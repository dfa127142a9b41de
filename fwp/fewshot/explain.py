"""Why did the few-shot learner predict that? One query's predicted-class logit, traced back to
the support examples through the FWP–attention duality (:mod:`fwp.dual`, docs/dual.md).

Block l of a fast weight core reads the query from the fast weights that the support set left,
S_T = S_0 + Σ_τ ΔS_τ, one write ΔS_τ per support example τ. Two kinds of numbers come out:

* **Pieces** (exact and additive). The query's layer output in block l, per head and before the
  output projection, as initial-fast-weight term + one piece per support write + the query's own
  write (for rules that read after writing). The pieces add up to what
  :meth:`FewShotLearner.predict` computes; heads are concatenated before the (linear) output
  projection, so per block the sum over heads is exact too.
* **Effects** (exact counterfactuals, *not* additive over examples). The predicted class's logit
  minus the same logit recomputed with write ΔS_τ taken out of block l's fast weights just before
  the query reads them, the rest of the network re-run on the query. For srwm and deltanet the
  query's layer output is affine in S_T, so this equals removing write τ's piece (through the
  output projection) from the block's output; for linear attention the write also leaves the
  normaliser. The "all blocks" effect takes example τ's writes out of every block at once.

What an effect is not: the episode re-run without example τ. The values of the later writes
(which for deltanet and srwm depended on the state that τ changed), and in deeper blocks the
other examples' writes (computed from inputs that τ's lower-block writes shaped), stay as they
were.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fwp.dual import delta_rule_contributions, srwm_contributions, sum_rule_contributions
from fwp.errors import UserError
from fwp.fewshot.model import FewShotLearner
from fwp.layers.fast_weights import SRWM, DeltaNet, LinearAttention

FAST_WEIGHT_LAYERS: dict[type[nn.Module], str] = {
    SRWM: "srwm",
    DeltaNet: "deltanet",
    LinearAttention: "linear",
}
NEEDS_FAST_WEIGHTS = "explain needs a run with a fast weight core: srwm, deltanet or linear"


@dataclass
class QuerySplit:
    """The query's layer output of one block, per head before the output projection:
    ``initial [H, V] + support.sum(1) [H, T, V] + own_write [H, V]``."""

    initial: torch.Tensor
    support: torch.Tensor
    own_write: torch.Tensor

    def total(self) -> torch.Tensor:
        return self.initial + self.support.sum(1) + self.own_write


@dataclass
class BlockExplanation:
    """One fast weight block of the core.

    Attributes:
        index: the block's position in the core (0 = first).
        layer: ``srwm`` | ``deltanet`` | ``linear``.
        split: the query's layer output in pieces (:class:`QuerySplit`).
        layer_output: ``[d_model]`` the block layer's query output as ``predict`` computed it
            (= the output projection of ``split.total()``).
        effects: ``[T]`` predicted logit − logit with support write τ removed from this block.
        class_effects: ``[N]`` the same with every write of label c removed from this block.
        reset_effect: the same with every support write removed (the block's fast weights reset
            to their initial values for the query).
        fast_weights: ``[T + 1, H, rows, cols]`` W_0 … W_T, the block's fast weights after each
            support write (srwm: rows y, k, q, β; deltanet / linear: keys × values, linear with
            the normaliser as last column).
    """

    index: int
    layer: str
    split: QuerySplit
    layer_output: torch.Tensor
    effects: torch.Tensor
    class_effects: torch.Tensor
    reset_effect: float
    fast_weights: torch.Tensor

    def contribution_norms(self) -> dict[str, list]:
        """Euclidean norms of the pieces per head: initial ``[H]``, support ``[H][T]``,
        own write ``[H]``."""
        return {
            "initial": self.split.initial.norm(dim=-1).tolist(),
            "support": self.split.support.norm(dim=-1).tolist(),
            "own_write": self.split.own_write.norm(dim=-1).tolist(),
        }


@dataclass
class Explanation:
    """One query of one episode: its logits, and every support example's effect on the logit of
    the predicted class, per fast weight block and for all blocks at once (counterfactuals, see
    the module docstring). Effects > 0: the example's writes pushed towards the prediction."""

    support_labels: torch.Tensor
    query_label: int
    predicted: int
    logits: torch.Tensor
    blocks: list[BlockExplanation]
    effects: torch.Tensor
    class_effects: torch.Tensor
    reset_effect: float
    leave_one_out: torch.Tensor

    def to_json(self) -> dict[str, Any]:
        return {
            "support_labels": self.support_labels.tolist(),
            "true_class": self.query_label,
            "predicted_class": self.predicted,
            "logits": self.logits.tolist(),
            "effect": "predicted-class logit minus the logit with the example's fast weight "
            "writes removed before the query reads them (exact counterfactual, not additive; "
            "later writes kept as they were)",
            "leave_one_out": self.leave_one_out.tolist(),
            "leave_one_out_means": "predicted-class logit minus the logit when the episode is "
            "run again without the example (its later writes change too)",
            "all_blocks": {
                "effects": self.effects.tolist(),
                "class_effects": self.class_effects.tolist(),
                "reset_effect": self.reset_effect,
            },
            "blocks": [
                {
                    "block": block.index,
                    "layer": block.layer,
                    "effects": block.effects.tolist(),
                    "class_effects": block.class_effects.tolist(),
                    "reset_effect": block.reset_effect,
                    "contribution_norms": block.contribution_norms(),
                }
                for block in self.blocks
            ],
        }


def fast_weight_layer(layer: nn.Module) -> str:
    """The layer's name in :data:`FAST_WEIGHT_LAYERS`, or a :class:`UserError`."""
    name = FAST_WEIGHT_LAYERS.get(type(layer))
    if name is None:
        raise UserError(f"{NEEDS_FAST_WEIGHTS}; this core has a {type(layer).__name__} layer")
    return name


def split_srwm(layer: SRWM, h: torch.Tensor) -> QuerySplit:
    """The query's output from ``h [1, T+1, d_model]`` (support steps τ = 0 … T−1, then the
    query). The query reads W_T before it writes, so (:func:`fwp.dual.srwm_contributions`)

        y_q = W_0 a_q |_y + Σ_{τ<T} (φ(k_τ) · a_q) u_τ |_y,        no own-write piece.
    """
    (x,) = layer.read_inputs(h)
    dec = srwm_contributions(x, layer.W0, n_beta=layer.n_beta, input_softmax=layer.input_softmax,
                             rate_scale=layer.rate_scale)
    T = h.shape[1] - 1
    initial = dec.initial[0, T]
    return QuerySplit(initial, dec.contributions[0, T, :, :T], torch.zeros_like(initial))


def split_deltanet(layer: DeltaNet, h: torch.Tensor) -> QuerySplit:
    """The query's output from ``h [1, T+1, d_model]`` (support steps τ = 0 … T−1, then the
    query). The query writes before it reads: with u_q = β_q (v_q − S_Tᵀ k_q),
    :func:`fwp.dual.delta_rule_contributions` gives

        o_q = S_0ᵀ q + Σ_{τ<T} (q · k_τ) u_τ + (q · k_q) u_q.

    Part of the last term, −β_q (q · k_q) S_Tᵀ k_q, is a read of the support writes, so it goes
    to them; what stays with the query is its write as it would be on the initial fast weights:

        support τ:  (q · k_τ − β_q (q · k_q)(k_q · k_τ)) u_τ
        own write:  β_q (q · k_q)(v_q − S_0ᵀ k_q)

    Then o_q is affine in the support writes and initial + own write is the output from S_0.
    """
    q, k, v, beta = layer.read_inputs(h)
    dec = delta_rule_contributions(q, k, v, beta)
    T = h.shape[1] - 1
    pieces = dec.contributions[0, T]  # [H, T+1, V]
    # β_q (q · k_q)(k_q · k_τ) u_τ: the share of write τ in the query's own write's read.
    key_overlap = torch.einsum("hk,thk->ht", k[0, T], k[0, :T]).to(pieces)
    read = (beta[0, T].to(pieces) * dec.scores[0, T, :, T]).unsqueeze(-1) * key_overlap
    moved = read.unsqueeze(-1) * dec.values[0, :T].transpose(0, 1)
    return QuerySplit(dec.initial[0, T], pieces[:, :T] - moved, pieces[:, T] + moved.sum(1))


def split_linear(layer: LinearAttention, h: torch.Tensor) -> QuerySplit:
    """The query's output from ``h [1, T+1, d_model]`` (support steps τ = 0 … T−1, then the
    query; :func:`fwp.dual.sum_rule_contributions`):

        o_q = (S_0ᵀ q + Σ_{τ<T} (q · k_τ) v_τ + (q · k_q) v_q) / z,

    z = Σ_{τ<T} q · k_τ + q · k_q + ε when normalised (the learner's fast weights and
    normaliser start at zero), else 1. The split keeps z fixed: piece τ is its attention weight
    times v_τ.
    """
    q, k, v = layer.read_inputs(h)
    dec = sum_rule_contributions(q, k, v)
    T = h.shape[1] - 1
    pieces, initial = dec.contributions[0, T], dec.initial[0, T]
    if layer.normalize:
        z = (dec.scores[0, T].sum(-1) + layer.eps).unsqueeze(-1)
        pieces, initial = pieces / z.unsqueeze(-1), initial / z
    return QuerySplit(initial, pieces[:, :T], pieces[:, T])


SPLITS = {"srwm": split_srwm, "deltanet": split_deltanet, "linear": split_linear}


def initial_fast_weights(layer: nn.Module, like: torch.Tensor) -> torch.Tensor:
    """``[H, rows, cols]`` the fast weights before any write: W0 for srwm, zeros otherwise."""
    if isinstance(layer, SRWM):
        return layer.W0.to(like)
    return torch.zeros_like(like)


def fast_weight_trajectory(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """``[T + 1, H, rows, cols]`` W_0 … W_T: the layer run on ``h [1, T, d_model]`` one step at a
    time. Consecutive differences are the writes ΔS_τ (each one outer product)."""
    states, state = [], None
    for t in range(h.shape[1]):
        _, state = layer(h[:, t : t + 1], state)
        states.append(state[0])
    return torch.stack([initial_fast_weights(layer, states[0]), *states])


@contextmanager
def recorded_layer_calls(model: FewShotLearner) -> Iterator[list[list[tuple]]]:
    """Record ``(input, output)`` of every call of each block's sequence layer."""
    calls: list[list[tuple]] = [[] for _ in model.core.blocks]
    handles = [
        block.layer.register_forward_hook(
            lambda module, args, output, i=i: calls[i].append((args[0], output[0]))
        )
        for i, block in enumerate(model.core.blocks)
    ]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class EpisodeTrace:
    """One support set and one query through the learner, as ``observe`` + ``predict`` run them.

    Attributes:
        query_features: ``[1, 1, F]`` the query's backbone features.
        state: the core's state after the support set (per block ``[1, H, rows, cols]``).
        logits: ``[N]`` the query's logits.
        layer_inputs: per block ``[1, T + 1, d_model]``, the layer's input (after the block's
            LayerNorm) for the support examples then the query.
        layer_outputs: per block ``[d_model]``, the layer's output for the query.
        fast_weights: per block ``[T + 1, H, rows, cols]``, W_0 … W_T.
    """

    query_features: torch.Tensor
    state: list[torch.Tensor]
    logits: torch.Tensor
    layer_inputs: list[torch.Tensor]
    layer_outputs: list[torch.Tensor]
    fast_weights: list[torch.Tensor]

    def writes(self, block: int) -> torch.Tensor:
        """``[T, H, rows, cols]`` ΔS_τ = W_τ − W_{τ−1}, what support example τ wrote."""
        return self.fast_weights[block].diff(dim=0)


@torch.no_grad()
def trace_episode(
    model: FewShotLearner,
    support_images: torch.Tensor,
    support_labels: torch.Tensor,
    query_image: torch.Tensor,
) -> EpisodeTrace:
    """Run ``support_images [T, C, H, W]`` with ``support_labels [T]``, then ``query_image
    [C, H, W]``, recording what each fast weight block saw and wrote."""
    for block in model.core.blocks:
        fast_weight_layer(block.layer)
    T = len(support_labels)
    images = torch.cat([support_images, query_image[None]])
    with recorded_layer_calls(model) as calls:
        features = model.features(images.to(next(model.parameters()).dtype)[None])
        state = model.observe_features(features[:, :T], support_labels[None])
        logits = model.predict_features(features[:, T:], state)[0, 0]
    return EpisodeTrace(
        query_features=features[:, T:],
        state=state,
        logits=logits,
        layer_inputs=[torch.cat([support[0], query[0]], dim=1) for support, query in calls],
        layer_outputs=[query[1][0, 0] for _, query in calls],
        fast_weights=[
            fast_weight_trajectory(block.layer, support[0])
            for block, (support, _) in zip(model.core.blocks, calls)
        ],
    )


@torch.no_grad()
def counterfactual_logits(
    model: FewShotLearner, trace: EpisodeTrace, removals: dict[int, torch.Tensor]
) -> torch.Tensor:
    """Logits ``[n, N]`` of the traced query read from n edited copies of the support state.

    Copy i of block l's fast weights is S_T − Σ_τ removals[l][i, τ] · ΔS_τ (``removals[l]``:
    ``[n, T]``, 1 = take write τ out); blocks missing from ``removals`` keep S_T. Everything
    after the edited fast weights (the layer's read, the rest of the network) is recomputed.
    """
    n = next(iter(removals.values())).shape[0]
    edited = []
    for index, s in enumerate(trace.state):
        s = s.expand(n, *s.shape[1:])
        if index in removals:
            s = s - torch.einsum("nt,t...->n...", removals[index].to(s), trace.writes(index))
        edited.append(s)
    return model.predict_features(trace.query_features.expand(n, -1, -1), edited)[:, 0]


@torch.no_grad()
def leave_one_out_logits(model: FewShotLearner, trace: EpisodeTrace,
                         support_features: torch.Tensor, support_labels: torch.Tensor
                         ) -> torch.Tensor:
    """Logits ``[T, N]`` of the traced query when the support set ``[1, T, F]`` is run again
    without example τ (row τ): the episode as if τ had never been shown, so unlike the write
    removals the writes after τ change as well. The T runs go as one batch."""
    T = support_labels.shape[-1]
    keep = ~torch.eye(T, dtype=torch.bool)
    features = support_features.expand(T, -1, -1)[keep].view(T, T - 1, -1)
    labels = support_labels.reshape(1, T).expand(T, -1)[keep].view(T, T - 1)
    state = model.observe_features(features, labels)
    return model.predict_features(trace.query_features.expand(T, -1, -1), state)[:, 0]


@torch.no_grad()
def explain_episode(
    model: FewShotLearner,
    support_images: torch.Tensor,
    support_labels: torch.Tensor,
    query_image: torch.Tensor,
    query_label: int,
) -> Explanation:
    """Explain the prediction for one query from one support set.

    Args:
        model: a learner with a fast weight core, in eval mode; float64 keeps the pieces exact
            to ~1e-12 (``explain_run`` uses float64 and the ``recurrent`` reference operators).
        support_images: ``[T, C, H, W]``; support_labels: ``[T]`` in 0 … N−1.
        query_image: ``[C, H, W]``; query_label: its true label (only reported).
    """
    trace = trace_episode(model, support_images, support_labels, query_image)
    T, n_blocks = len(support_labels), len(model.core.blocks)
    predicted = int(trace.logits.argmax())
    # Removal masks: each example alone, each label's examples, then all of them.
    masks = torch.cat([
        torch.eye(T),
        nn.functional.one_hot(support_labels, model.n_way).T.float(),
        torch.ones(1, T),
    ])

    def effects(removals: dict[int, torch.Tensor]) -> torch.Tensor:
        changed = counterfactual_logits(model, trace, removals)
        return (trace.logits[predicted] - changed[:, predicted]).cpu()

    blocks = []
    for index, block in enumerate(model.core.blocks):
        name = fast_weight_layer(block.layer)
        delta = effects({index: masks})
        blocks.append(BlockExplanation(
            index=index, layer=name,
            split=SPLITS[name](block.layer, trace.layer_inputs[index]),
            layer_output=trace.layer_outputs[index], effects=delta[:T],
            class_effects=delta[T:-1], reset_effect=float(delta[-1]),
            fast_weights=trace.fast_weights[index].cpu(),
        ))
    together = effects(dict.fromkeys(range(n_blocks), masks))
    support_features = model.features(support_images.to(trace.logits.dtype)[None])
    without = leave_one_out_logits(model, trace, support_features, support_labels)
    return Explanation(
        support_labels=support_labels.cpu(), query_label=int(query_label), predicted=predicted,
        logits=trace.logits.cpu(), blocks=blocks, effects=together[:T],
        class_effects=together[T:-1], reset_effect=float(together[-1]),
        leave_one_out=(trace.logits[predicted] - without[:, predicted]).cpu(),
    )
