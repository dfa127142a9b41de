"""A decoder-only language model over any list of registered layers, hybrids included.

tokens ``[B, T]`` → embedding → :class:`fwp.layers.LayerStack` (``["deltanet", "deltanet",
"transformer"]``, ...) → LayerNorm → logits ``[B, T, V]`` (output matrix tied to the embedding by
default, as in the public recurrent-FWP language-model code). There are no positional encodings:
the fast weight layers need none, and the public code trains its carried-state models without
them (``--no_pos``); the softmax layers read order from their causal mask (our choice, so that
every layer list is the same model around its layers).

The state is the stack's: one entry per block (fast weights, an LSTM's (h, c), or a softmax
layer's key/value cache), so a text can be read in pieces of any size and give the same logits as
read whole (the basis of truncated backpropagation and of generation). :func:`trim_cache` keeps
the last ``window`` keys of every softmax layer's cache, the Transformer-XL memory that lets a
softmax layer carry context across training segments with bounded cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fwp.errors import UserError
from fwp.layers import LAYERS, LayerStack, SoftmaxAttention


@dataclass
class LMSpec:
    """Everything that fixes a model's shape (saved with every checkpoint)."""

    vocab_size: int
    layers: list[str]
    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 512
    dropout: float = 0.0
    layer_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    tie_embeddings: bool = True

    def validate(self) -> None:
        unknown = [name for name in self.layers if name not in LAYERS]
        if unknown:
            raise UserError(f"unknown layer {unknown[0]!r}; choose from {', '.join(LAYERS)}")
        if not self.layers:
            raise UserError("--layers needs at least one layer name, e.g. deltanet,deltanet")
        stray = sorted(set(self.layer_options) - set(self.layers))
        if stray:
            raise UserError(f"layer options for {stray[0]!r}, which is not among --layers "
                            f"{','.join(self.layers)}: remove them or add the layer")
        for name, value in (("vocab_size", self.vocab_size), ("d_model", self.d_model),
                            ("n_heads", self.n_heads), ("d_ff", self.d_ff)):
            if value < 1:
                raise UserError(f"{name} must be at least 1 (got {value})")


class FwpLM(nn.Module):
    """Token embedding → blocks of the named layers → LayerNorm → tied output."""

    def __init__(self, spec: LMSpec) -> None:
        super().__init__()
        spec.validate()
        self.spec = spec
        self.embed = nn.Embedding(spec.vocab_size, spec.d_model)
        self.drop = nn.Dropout(spec.dropout)
        self.stack = LayerStack(spec.layers, spec.d_model, spec.n_heads, spec.d_ff,
                                spec.dropout, layer_options=spec.layer_options)
        self.norm = nn.LayerNorm(spec.d_model)
        self.head = nn.Linear(spec.d_model, spec.vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=0.02)  # the public code's init_std
        if spec.tie_embeddings:
            self.head.weight = self.embed.weight
        else:
            nn.init.normal_(self.head.weight, std=0.02)

    def forward(
        self, tokens: torch.Tensor, state: list[Any] | None = None
    ) -> tuple[torch.Tensor, list[Any]]:
        """``tokens [B, T]`` (and the state after the text before them) → ``(logits [B, T, V],
        state after tokens)``."""
        h, state = self.stack(self.drop(self.embed(tokens)), state)
        return self.head(self.norm(h)), state

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def trim_cache(self, state: list[Any] | None, window: int) -> list[Any] | None:
        """The state with each softmax layer's key/value cache cut to its last ``window``
        positions (``window`` ≤ 0: cut nothing). Fast weight states have a fixed size already."""
        if state is None or window <= 0:
            return state
        return [
            tuple(t[..., -window:, :] for t in s)
            if isinstance(block.layer, SoftmaxAttention) and s is not None else s
            for block, s in zip(self.stack.blocks, state)
        ]

    def has_cache(self) -> bool:
        """Whether a layer's state grows with the text (a softmax layer's key/value cache)."""
        return any(isinstance(b.layer, SoftmaxAttention) for b in self.stack.blocks)


def parse_layers(text: str | list[str]) -> list[str]:
    """``"deltanet,deltanet,transformer"`` (or ``"deltanet*2,transformer"``) → names."""
    parts = (",".join(text) if isinstance(text, list) else text).split(",")
    names: list[str] = []
    for part in (p.strip() for p in parts):
        name, _, times = part.partition("*")
        if times and not times.isdigit():
            raise UserError(f"--layers: {part!r} should be NAME or NAME*COUNT")
        names.extend([name] * (int(times) if times else 1))
    return names


def split_layer_options(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"deltanet.feature_map": "l2"}`` (the form of ``--layer-option``) → ``{"deltanet":
    {"feature_map": "l2"}}``."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in options.items():
        layer, dot, name = key.partition(".")
        if not dot or not name:
            raise UserError(f"--layer-option {key}={value!r}: write LAYER.OPTION=VALUE, e.g. "
                            f"deltanet.feature_map=l2")
        nested.setdefault(layer, {})[name] = value
    return nested
