"""The layers FWPs are compared with: causal softmax attention and the LSTM.

They follow the same state API as the fast weight layers, so every model can run a sequence in
pieces: softmax attention's state is its key/value cache, the LSTM's its (h, c).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fwp.errors import UserError
from fwp.layers.fast_weights import head_dim_for, split_heads
from fwp.layers.registry import register_layer


@register_layer("transformer")
class SoftmaxAttention(nn.Module):
    """Causal multi-head softmax attention (Vaswani et al. 2017); state = (keys, values) cache
    ``[B, H, T_past, D]`` each.

    ``rope``: rotary position embeddings (Su et al. 2021, RoFormer) on queries and keys, with
    ``rope_base`` (10,000 as published); with an odd head dimension the last one is left
    unrotated. Off by default: the layer then reads order only from its
    causal mask (a prefix's order is invisible to it). The cache keeps the keys unrotated and
    every call rotates them by their place in the cache, so scores depend only on the distance
    between query and key and a cache cut to its last keys (``FwpLM.trim_cache``) stays right.
    """

    def __init__(self, d_model: int, n_heads: int, head_dim: int | None = None,
                 rope: bool = False, rope_base: float = 10_000.0) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim_for(d_model, n_heads, head_dim)
        if rope_base <= 1.0:
            raise UserError(f"transformer: rope_base must be above 1 (got {rope_base})")
        self.rope, self.rope_base = rope, float(rope_base)
        self.qkv = nn.Linear(d_model, 3 * n_heads * self.head_dim, bias=False)
        self.out = nn.Linear(n_heads * self.head_dim, d_model, bias=False)

    def rotate(self, x: torch.Tensor, first: int) -> torch.Tensor:
        """``x`` ``[B, H, T, D]`` rotated as at positions first … first + T − 1."""
        half = self.head_dim // 2
        inverse = self.rope_base ** -(torch.arange(half, dtype=x.dtype, device=x.device) / half)
        position = torch.arange(first, first + x.shape[-2], dtype=x.dtype, device=x.device)
        angle = position[:, None] * inverse
        cos, sin = angle.cos(), angle.sin()
        x1, x2, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        q, k, v = split_heads(self.qkv(x), self.n_heads).transpose(1, 2).chunk(3, dim=-1)
        T = q.shape[-2]
        if state is not None:
            k, v = torch.cat([state[0], k], dim=-2), torch.cat([state[1], v], dim=-2)
        past = k.shape[-2] - T
        q_used, k_used = (self.rotate(q, past), self.rotate(k, 0)) if self.rope else (q, k)
        if state is None:
            o = F.scaled_dot_product_attention(q_used, k_used, v, is_causal=True)
        else:
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
            o = F.scaled_dot_product_attention(q_used, k_used, v, attn_mask=mask)
        return self.out(o.transpose(1, 2).flatten(-2)), (k, v)


class LSTMWeights(nn.Module):
    """The parameters of a one-layer ``nn.LSTM`` under its names (``weight_ih_l0``, ...), drawn
    as it draws them, without being an ``nn.LSTM``: ``torch.compile`` refuses to trace one."""

    def __init__(self, d_in: int, d_hidden: int) -> None:
        super().__init__()
        reference = nn.LSTM(d_in, d_hidden, batch_first=True)
        self.hidden_size = d_hidden
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            self.register_parameter(name, reference.get_parameter(name))

    def flat(self) -> list[torch.Tensor]:
        return [self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0]


@register_layer("lstm")
class LSTM(nn.Module):
    """One LSTM layer of width d_model (``n_heads`` is accepted and ignored); state = (h, c),
    each ``[B, 1, d_model]`` (batch first, like every layer's state; ``nn.LSTM`` puts it second).

    Gates i, f, g, o of W_ih x_t + b_ih + W_hh h_{t−1} + b_hh (σ for i, f, o; tanh for g);
    c_t = f c_{t−1} + i g, h_t = o tanh(c_t). Eager: ``nn.LSTM``'s fused kernel; under
    ``torch.compile``: the same equations as a loop over time.
    """

    def __init__(self, d_model: int, n_heads: int = 1) -> None:
        super().__init__()
        self.lstm = LSTMWeights(d_model, d_model)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if torch.compiler.is_compiling():
            return self.unrolled(x, state)
        if state is None:
            zeros = x.new_zeros(1, x.shape[0], self.lstm.hidden_size)
            state = (zeros, zeros)
        else:
            state = tuple(s.transpose(0, 1).contiguous() for s in state)
        # nn.LSTM's own call: (input, hx, weights, has_biases, layers, dropout, train,
        # bidirectional, batch_first).
        y, h, c = torch._VF.lstm(x, state, self.lstm.flat(), True, 1, 0.0, self.training,
                                 False, True)
        return y, (h.transpose(0, 1), c.transpose(0, 1))

    def unrolled(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The same LSTM as a loop over time (what ``torch.compile`` traces)."""
        w_ih, w_hh, b_ih, b_hh = self.lstm.flat()
        if state is None:
            h = c = x.new_zeros(x.shape[0], self.lstm.hidden_size)
        else:
            h, c = (s.squeeze(1) for s in state)
        outputs = []
        for gates_x in F.linear(x, w_ih, b_ih).unbind(1):
            i, f, g, o = (gates_x + F.linear(h, w_hh, b_hh)).chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1), (h.unsqueeze(1), c.unsqueeze(1))
