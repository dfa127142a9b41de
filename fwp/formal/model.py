"""The formal-language model: any registered sequence layer between an embedding and a
multi-label head over the "valid next characters".

    tokens [B, T] → Embedding → LayerStack([model] × layers) → LayerNorm → Linear → logits [B, T, C]

C = |Σ| + 1 (the alphabet and END); trained with binary cross-entropy per class (Bhattamishra et
al. 2020). The layer stack is causal, so right padding never changes a real position's output.

With ``layer_defaults="published"`` a layer gets the settings of the public formal-language code
of Irie, Csordás & Schmidhuber (2023) where it has some
(:data:`fwp.formal.config.PUBLISHED_LAYERS`), under any
option given in ``layer_options``; ``residual="published"`` picks that code's block per layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fwp.errors import UserError
from fwp.formal.config import ModelConfig
from fwp.formal.languages import Language
from fwp.layers.block import RESIDUALS as BLOCK_RESIDUALS

RESIDUALS = ("published", *BLOCK_RESIDUALS)
"""``--residual``: ``published`` (the public code's block of the layer) or a block residual."""


def layer_settings(config: ModelConfig) -> tuple[dict, str]:
    """The layer options and block residual a model config resolves to."""
    return config.layer_settings()


def available_models() -> list[str]:
    """Layer names usable as ``--model`` (the keys of ``fwp.layers.LAYERS``)."""
    try:
        from fwp.layers import LAYERS
    except ImportError:
        return []
    return sorted(LAYERS)


def build_stack(config: ModelConfig) -> nn.Module:
    """``fwp.layers.LayerStack`` of ``config.layers`` copies of layer ``config.model``."""
    try:
        from fwp.layers import LAYERS, LayerStack
    except ImportError as error:
        raise UserError(f"the sequence layers (fwp.layers) are not available: {error}") from None
    if config.model not in LAYERS:
        raise UserError(
            f"unknown model {config.model!r}; choose a registered layer: "
            f"{', '.join(sorted(LAYERS))}"
        )
    options, residual = layer_settings(config)
    return LayerStack(
        [config.model] * config.layers,
        d_model=config.d_model,
        n_heads=config.heads,
        d_ff=config.d_ff,
        dropout=config.dropout,
        residual=residual,
        layer_options={config.model: options},
    )


def sinusoidal(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Vaswani et al. (2017) position encodings ``[length, dim]``."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


class FormalModel(nn.Module):
    """Per-position multi-label logits over ``language.classes``."""

    def __init__(self, language: Language, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # One extra row for the padding token (index len(alphabet)).
        self.embed = nn.Embedding(len(language.alphabet) + 1, config.d_model)
        self.stack = build_stack(config)
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, len(language.classes))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, T]`` → logits ``[B, T, C]``."""
        x = self.embed(tokens)
        if self.config.pos_encoding == "sinusoidal":
            x = x + sinusoidal(tokens.shape[1], x.shape[-1], x.device)
        y, _ = self.stack(x, state=None)
        return self.head(self.norm(y))
