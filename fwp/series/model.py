"""Sequence classifiers over prepared series: any registered layer, or the GRU-Δt baseline.

``model`` = a registered layer name (``ct_hebb``, ``ct_oja``, ``ct_delta``, ``ncde``, the
discrete ``deltanet``, ``linear``, …): input channels → Linear(d_model) → ``layers`` blocks of
[layer, feed-forward] → LayerNorm → Linear(classes), read at each series' last point.
``gru_dt``: the GRU-Δt of Kidger et al. (2020) as in the public code: a GRU cell updated only at
time points with an observation, reading the values and the time since the last observation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fwp.errors import UserError
from fwp.layers import LAYERS, LayerStack

BASELINES = ("gru_dt",)
MODEL_NAMES = (*sorted(LAYERS), *BASELINES)


class GRUDeltaT(nn.Module):
    """h_i = GRUCell([Δt_i, x_i], h_{i−1}) where point i holds an observation, else h_{i−1};
    Δt_i = time since the last observation (channel 0 of the input is time)."""

    def __init__(self, in_channels: int, d_model: int) -> None:
        super().__init__()
        self.cell = nn.GRUCell(in_channels, d_model)
        self.d_model = d_model

    def forward(self, values: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        h = values.new_zeros(values.shape[0], self.d_model)
        last_time = values[:, 0, 0]
        outputs = []
        for x, seen in zip(values.unbind(1), observed.unbind(1)):
            gap = x[:, :1] - last_time[:, None]
            h = torch.where(seen[:, None], self.cell(torch.cat([gap, x[:, 1:]], -1), h), h)
            last_time = torch.where(seen, x[:, 0], last_time)
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class SeriesClassifier(nn.Module):
    """``forward(values [B, T, C], observed [B, T], lengths [B]) → logits [B, classes]``."""

    def __init__(self, in_channels: int, n_classes: int, model: str, layers: int, d_model: int,
                 heads: int, d_ff: int, dropout: float = 0.0,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__()
        if model not in MODEL_NAMES:
            raise UserError(f"unknown model {model!r}; choose one of {MODEL_NAMES}")
        self.model = model
        if model == "gru_dt":
            if options:
                raise UserError(f"layer options {sorted(options)} do not apply to gru_dt")
            self.core: nn.Module = GRUDeltaT(in_channels, d_model)
        else:
            self.embed = nn.Linear(in_channels, d_model)
            self.core = LayerStack([model] * layers, d_model, heads, d_ff, dropout,
                                   layer_options={model: dict(options or {})})
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, values: torch.Tensor, observed: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:
        if self.model == "gru_dt":
            h = self.core(values, observed)
        else:
            h, _ = self.core(self.embed(values))
        last = h[torch.arange(len(lengths), device=h.device), lengths - 1]
        return self.head(self.norm(last))
