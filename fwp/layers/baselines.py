"""The layers FWPs are compared with: causal softmax attention and the LSTM.

They follow the same state API as the fast weight layers, so every model can run a sequence in
pieces: softmax attention's state is its key/value cache, the LSTM's its (h, c).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fwp.layers.fast_weights import head_dim_for, split_heads
from fwp.layers.registry import register_layer


@register_layer("transformer")
class SoftmaxAttention(nn.Module):
    """Causal multi-head softmax attention (Vaswani et al. 2017); state = (keys, values) cache
    ``[B, H, T_past, D]`` each."""

    def __init__(self, d_model: int, n_heads: int, head_dim: int | None = None) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim_for(d_model, n_heads, head_dim)
        self.qkv = nn.Linear(d_model, 3 * n_heads * self.head_dim, bias=False)
        self.out = nn.Linear(n_heads * self.head_dim, d_model, bias=False)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        q, k, v = split_heads(self.qkv(x), self.n_heads).transpose(1, 2).chunk(3, dim=-1)
        T = q.shape[-2]
        if state is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            k, v = torch.cat([state[0], k], dim=-2), torch.cat([state[1], v], dim=-2)
            past = k.shape[-2] - T
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(o.transpose(1, 2).flatten(-2)), (k, v)


@register_layer("lstm")
class LSTM(nn.Module):
    """One LSTM layer of width d_model (``n_heads`` is accepted and ignored); state = (h, c),
    each ``[B, 1, d_model]`` (batch first, like every layer's state; ``nn.LSTM`` puts it second)."""

    def __init__(self, d_model: int, n_heads: int = 1) -> None:
        super().__init__()
        self.lstm = nn.LSTM(d_model, d_model, batch_first=True)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if state is not None:
            state = tuple(s.transpose(0, 1).contiguous() for s in state)
        y, (h, c) = self.lstm(x, state)
        return y, (h.transpose(0, 1), c.transpose(0, 1))
