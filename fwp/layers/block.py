"""Transformer-style blocks around any registered layer, and a stack of them by name."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fwp.errors import UserError
from fwp.layers.registry import build_layer

RESIDUALS = ("pre_norm", "normed", "normed_skip")


class FeedForward(nn.Module):
    """x + Drop(Lin(Drop(ReLU(Lin(LN x))))), the two-layer block of the papers."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, d_ff),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(d_ff, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class Block(nn.Module):
    """A sequence layer with LayerNorm, residual and dropout, then a feed-forward block.

    ``residual="pre_norm"``: h = x + Drop(layer(LN x)) (the usual form, the public RL code).
    ``residual="normed"``: h = LN(x) + Drop(layer(LN x)).
    ``residual="normed_skip"``: h = LN(x) + Drop(layer(x)), the block of the public few-shot SRWM
    code (``SRWMlayer``: its input LayerNorm is commented out, LN(x) is only the skip path). The
    layer reads the raw x, whose scale sets the temperature of the SRWM's softmax keys and
    queries, so this is a different model from ``normed``.
    """

    def __init__(
        self,
        layer: str,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        residual: str = "pre_norm",
        **layer_options: Any,
    ) -> None:
        super().__init__()
        if residual not in RESIDUALS:
            raise UserError(f"unknown residual {residual!r}; choose one of {RESIDUALS}")
        self.residual = residual
        self.norm = nn.LayerNorm(d_model)
        self.layer = build_layer(layer, d_model, n_heads, **layer_options)
        self.drop = nn.Dropout(dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        h = self.norm(x)
        out, state = self.layer(x if self.residual == "normed_skip" else h, state)
        x = (x if self.residual == "pre_norm" else h) + self.drop(out)
        return self.ff(x), state


class LayerStack(nn.Module):
    """Blocks named by a list: ``LayerStack(["srwm"] * 3, d_model=256, n_heads=16, d_ff=2048)``.

    ``layer_options`` maps a layer name to keyword options of that layer class, e.g.
    ``{"srwm": {"n_beta": 4}}``. The state is a list with one entry per block.
    """

    def __init__(
        self,
        layers: list[str],
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        residual: str = "pre_norm",
        layer_options: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if not layers:
            raise UserError("a LayerStack needs at least one layer name")
        options = layer_options or {}
        self.blocks = nn.ModuleList(
            Block(name, d_model, n_heads, d_ff, dropout, residual, **options.get(name, {}))
            for name in layers
        )

    def forward(
        self, x: torch.Tensor, state: list[Any] | None = None
    ) -> tuple[torch.Tensor, list[Any]]:
        states = [None] * len(self.blocks) if state is None else state
        if len(states) != len(self.blocks):
            raise UserError(f"state has {len(states)} entries for {len(self.blocks)} blocks")
        new_states = []
        for block, s in zip(self.blocks, states):
            x, s = block(x, s)
            new_states.append(s)
        return x, new_states
