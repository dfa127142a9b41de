"""The sequential few-shot learner: backbone × sequence core × head, composed from config.

An episode is a sequence of labelled examples (x_t, y_t), t = 1 … N·K, then a query x with no
label (seed paper Sec. 1). Each example enters the core as Lin([features(x_t); onehot(y_t)]);
the query's label input is all zeros, the paper's ∅ = 0 read as a zero vector: a dedicated "no
label" input. The public code feeds label index 0 instead, i.e. class 0's one-hot, so its query
looks like an example of class 0: ``query_input = "class0"`` does the same, for checkpoints of
that code (``fwp fewshot import``) and to measure what the choice changes (docs/fewshot.md).

The core's state after the support set is the learner's "trained model" W_{N·K}
(seed paper Fig. 1): :meth:`FewShotLearner.observe` continues it with more examples and
:meth:`FewShotLearner.predict` classifies queries from it without writing into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fwp.fewshot.backbones import build_backbone
from fwp.fewshot.config import RunConfig
from fwp.fewshot.losses import flat_tensors
from fwp.layers import LayerStack, clone_state, repeat_state


@dataclass
class EpisodeOutput:
    """Query logits from the state after N·K examples and, when bootstrapping, N·(K+K′).

    ``student_logits`` / ``teacher_logits``: ``[B, Q, N]``; the states are the core's (per block)
    at those two points; the shifts are their fast weights minus the initial ones, as a flat list
    of blocks (:meth:`FewShotLearner.state_shifts`), for the ``weights`` distillation variant.
    """

    student_logits: torch.Tensor
    student_state: list[Any]
    teacher_logits: torch.Tensor | None = None
    teacher_state: list[Any] | None = None
    student_shifts: list[torch.Tensor] | None = None
    teacher_shifts: list[torch.Tensor] | None = None


class FewShotLearner(nn.Module):
    """``backbone → Lin([features; label]) → LayerStack → [LN] → Lin to N`` (one class for all).

    Images are ``[B, T, C, H, W]``, labels ``[B, T]`` in ``0 … N−1``; states are those of
    :class:`fwp.layers.LayerStack` (a list with one entry per block). With
    ``residual = "normed_skip"``, ``n_beta = 4`` and ``final_norm = False`` this is the public
    few-shot SRWM model (``StatefulConvSRWMModel`` of the public code): its SRWM reads the raw
    block input, its block is LN(h) + Drop(Lin(SRWM(h))) then the feed-forward block
    x + Drop(Lin(Drop(ReLU(Lin(LN x))))), and no LayerNorm precedes the classifier.
    """

    def __init__(self, config: RunConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        net = config.network
        self.n_way = config.data.n_way
        self.backbone, feature_dim = build_backbone(
            net.backbone, image_shape, config.conv_channels(), net.conv_dropout
        )
        self.token_shift = net.token_shift
        shifted = feature_dim if net.token_shift else 0
        self.input = nn.Linear(feature_dim + self.n_way + shifted, net.d_model)
        self.core = LayerStack(
            [net.model] * net.layers, net.d_model, net.heads, net.d_ff, net.dropout,
            net.residual, {net.model: net.core_options()},
        )
        # Causal depthwise convolution over time (delayed-label streams): lets a step see the
        # previous image next to its label, as the short convolutions of linear-attention
        # models do (e.g. flash-linear-attention's DeltaNet).
        self.short_conv = (
            nn.Conv1d(net.d_model, net.d_model, net.short_conv, groups=net.d_model)
            if net.short_conv else None
        )
        self.norm = nn.LayerNorm(net.d_model) if net.final_norm else nn.Identity()
        self.head = nn.Linear(net.d_model, self.n_way)
        self.separate_backbone_calls = net.separate_backbone_calls
        self.query_class0 = net.query_input == "class0"

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, T, C, H, W]`` → ``[B, T, F]`` backbone features."""
        return self.backbone(images.flatten(0, 1)).unflatten(0, images.shape[:2])

    def embed(self, features: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """``[B, T, F]`` features and ``[B, T]`` labels (None: no label) → ``[B, T, d_model]``.
        No label is a zero vector, or class 0's one-hot with ``query_input = "class0"``."""
        if labels is None:
            label_input = features.new_zeros(*features.shape[:-1], self.n_way)
            if self.query_class0:
                label_input[..., 0] = 1
        else:
            label_input = F.one_hot(labels, self.n_way).to(features.dtype)
        return self.input(torch.cat([features, label_input], dim=-1))

    def observe_features(
        self, features: torch.Tensor, labels: torch.Tensor, state: list[Any] | None = None
    ) -> list[Any]:
        _, state = self.core(self.embed(features, labels), state)
        return state

    def predict_features(self, features: torch.Tensor, state: list[Any]) -> torch.Tensor:
        """Each of the Q queries ``[B, Q, F]`` as its own length-1 continuation of ``state``,
        so that no query sees another: logits ``[B, Q, N]``. The Q continuations run as one
        batch of B·Q sequences, each sequence's state repeated Q times."""
        x = self.embed(features, None)
        B, Q = x.shape[:2]
        out, _ = self.core(x.flatten(0, 1).unsqueeze(1), repeat_state(state, Q))
        return self.head(self.norm(out.view(B, Q, -1)))

    def step_logits(self, features: torch.Tensor, label_input: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, T, N]`` at every step of whole streams: ``[B, T, F]`` features read with
        ``[B, T, N]`` label inputs (one-hot, or zeros for "no label"); the delayed-label streams
        of :mod:`fwp.fewshot.protocols`."""
        inputs = [features, label_input]
        if self.token_shift:  # f(x_{t−1}), zeros at t = 1
            inputs.append(F.pad(features, (0, 0, 1, 0))[:, :-1])
        x = self.input(torch.cat(inputs, dim=-1))
        if self.short_conv is not None:
            width = self.short_conv.kernel_size[0]
            x = self.short_conv(F.pad(x.transpose(1, 2), (width - 1, 0))).transpose(1, 2)
        out, _ = self.core(x)
        return self.head(self.norm(out))

    def observe(
        self, images: torch.Tensor, labels: torch.Tensor, state: list[Any] | None = None
    ) -> list[Any]:
        """Continue ``state`` (None: the start) with labelled examples; the new state."""
        return self.observe_features(self.features(images), labels, state)

    def predict(self, images: torch.Tensor, state: list[Any]) -> torch.Tensor:
        """Logits ``[B, Q, N]`` of queries ``[B, Q, C, H, W]``, each from ``state`` alone."""
        return self.predict_features(self.features(images), state)

    def state_shifts(self, state: list[Any]) -> list[torch.Tensor]:
        """Each block's fast weights minus their initial value, as a flat list of tensors: the
        SRWM's four blocks W − W0 (y, k, q, β; :meth:`fwp.layers.SRWM.shift_blocks`), or the
        state tensors of cores whose state starts at zero."""
        shifts: list[torch.Tensor] = []
        for block, s in zip(self.core.blocks, state):
            if hasattr(block.layer, "shift_blocks"):
                shifts += block.layer.shift_blocks(s)
            else:
                shifts += flat_tensors(s)
        return shifts

    def forward(
        self,
        support_images: torch.Tensor,
        support_labels: torch.Tensor,
        query_images: torch.Tensor,
        extra_images: torch.Tensor | None = None,
        extra_labels: torch.Tensor | None = None,
    ) -> EpisodeOutput:
        """One training episode (seed paper Fig. 1): W_NK from the support set predicts the
        queries; with extra examples, a clone of W_NK continues to W_N(K+K′), which predicts them
        again. The extra images go through the backbone in their own batch: in training mode
        BatchNorm statistics would otherwise let them leak into the student's prediction.

        ``separate_backbone_calls``: as the public bootstrapping script, support, query, extra
        and again query images go through the backbone in four calls, in that order (each call
        its own BatchNorm batch and dropout masks); otherwise support and query share one call,
        as in the public plain K-shot script."""
        if self.separate_backbone_calls:
            support, query = self.features(support_images), self.features(query_images)
        else:
            sizes = [support_images.shape[1], query_images.shape[1]]
            support, query = self.features(
                torch.cat([support_images, query_images], 1)).split(sizes, 1)
        state = self.observe_features(support, support_labels)
        out = EpisodeOutput(self.predict_features(query, state), state)
        if extra_images is not None:
            teacher_state = self.observe(extra_images, extra_labels, clone_state(state))
            if self.separate_backbone_calls:
                query = self.features(query_images)
            out.teacher_state = teacher_state
            out.teacher_logits = self.predict_features(query, teacher_state)
            out.student_shifts = self.state_shifts(state)
            out.teacher_shifts = self.state_shifts(teacher_state)
        return out

