"""Recurrent, higher-order and multi-step fast weight programmers.

Sequential layers (their slow net reads its own previous output, so there is no parallel form):

- ``"rec_deltanet"`` Recurrent DeltaNet, ``"delta_rnn"`` Delta RNN, ``"delta_lstm"`` Delta LSTM
  (Irie, Schlag, Csordás, Schmidhuber, NeurIPS 2021). They run a step function through
  :func:`fwp.ops.scan.scan`, whose training form keeps only per-step vectors and one copy of the
  state every ``checkpoint_every`` steps, and recomputes one stretch of time at a time in the
  backward.

Layers built from parallel operators (chunked, memory-light forms in ``fwp.ops``):

- ``"deltadelta"`` (the slow net is itself a DeltaNet; Irie et al. 2021), ``"srdelta"`` (an SRWM
  programs a DeltaNet; Irie et al., ICML 2022), ``"deltaproduct"`` (Siems et al. 2025) and
  ``"gated_deltanet"`` (Yang et al., ICLR 2025).

Every layer maps ``x [B, T, d_model]`` and a state (``None`` or what it returned before) to
``(y [B, T, d_model], state)``; the state is a tuple of tensors holding everything needed to go on:
fast weights and, for the sequential layers, the previous outputs. ``mode="recurrent"`` runs the
plain reference loops of every part (for tests); ``mode="auto"`` the fast forms.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fwp.errors import UserError
from fwp.layers.fast_weights import DeltaNet, beta_scale, head_dim_for, split_heads, srwm_init
from fwp.layers.registry import register_layer
from fwp.ops import delta_rule, get_feature_map, srwm
from fwp.ops.delta_product import delta_product
from fwp.ops.gated_delta_rule import gated_delta_rule
from fwp.ops.scan import Tensors, scan

LAYER_MODES = ("auto", "recurrent")


def check_mode(mode: str) -> str:
    if mode not in LAYER_MODES:
        raise UserError(
            f"unknown mode {mode!r}; choose 'auto' (fast forms) or 'recurrent' (reference loops)"
        )
    return mode


def op_mode(mode: str) -> str:
    """The operator mode for a layer mode: references stay references."""
    return "recurrent" if mode == "recurrent" else "auto"


def delta_step(
    state: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """One delta-rule write S + β k (v − Sᵀk)ᵀ; S ``[..., K, V]``, k ``[..., K]``, β ``[...]``."""
    v_old = (k.unsqueeze(-2) @ state).squeeze(-2)
    return state + k.unsqueeze(-1) * (beta.unsqueeze(-1) * (v - v_old)).unsqueeze(-2)


def read(state: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Sᵀ q for S ``[..., K, V]`` and q ``[..., K]``."""
    return (q.unsqueeze(-2) @ state).squeeze(-2)


def size_preserving_feature_map(
    feature_map: str, layer: str
) -> Callable[[torch.Tensor], torch.Tensor]:
    """φ for a layer that splits one projection into [q; k; v; …] blocks of the head size D.

    DPFP maps D to a larger size, which would not fit those blocks or the D × D state.
    """
    phi = get_feature_map(feature_map)
    if feature_map.startswith("dpfp"):
        raise UserError(f"{layer} needs a size-preserving feature map, not dpfp")
    return phi


def delta_net(
    phi: Callable[[torch.Tensor], torch.Tensor],
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    b: torch.Tensor,
    initial_state: torch.Tensor | None,
    mode: str,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A DeltaNet run on pre-activations q, k, v ``[B, T, H, ·]`` and b ``[B, T, H, 1]``.

    F_t = F_{t−1} + σ(b_t) φ(k_t) (v_t − F_{t−1}ᵀ φ(k_t))ᵀ,   o_t = F_tᵀ φ(q_t).
    ``mode`` is the layer mode. Returns ``(o [B, T, H, V], F_T)``.
    """
    return delta_rule(
        phi(q), phi(k), v, torch.sigmoid(b.squeeze(-1)), initial_state=initial_state,
        output_final_state=True, mode=op_mode(mode), chunk_size=chunk_size,
    )


# --------------------------------------------------------------------------------------------
# Sequential layers (Irie, Schlag, Csordás, Schmidhuber, NeurIPS 2021).
# --------------------------------------------------------------------------------------------


@register_layer("rec_deltanet")
class RecurrentDeltaNet(nn.Module):
    """Recurrent DeltaNet: the slow net also reads the layer's previous output (Irie et al. 2021).

    Per head, with a_t = tanh(o_{t−1}) (o_0 = 0) and slow weights W_* (from x) and R_* (recurrent):

        q_t = φ(W_q x_t + R_q a_t),  k_t = φ(W_k x_t + R_k a_t),  v_t = W_v x_t + R_v a_t,
        β_t = σ(w_β x_t + r_β · a_t),
        S_t = S_{t−1} + β_t k_t (v_t − S_{t−1}ᵀ k_t)ᵀ,   o_t = S_tᵀ q_t,

    φ = softmax as in the public kernel. State: ``(S [B, H, D, D], o_T [B, H, D])``.
    R_* are N(0, 1/D) per entry (std 1/√D), as in the public code.
    ``allow_negative_eigenvalues``: β_t = 2σ(·) ∈ (0, 2), as in :class:`DeltaNet`.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        head_dim: int | None = None,
        feature_map: str = "softmax",
        allow_negative_eigenvalues: bool = False,
        mode: str = "auto",
        checkpoint_every: int | None = None,
    ) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim_for(d_model, n_heads, head_dim)
        D = self.head_dim
        self.phi = size_preserving_feature_map(feature_map, "rec_deltanet")
        self.beta_scale = beta_scale(allow_negative_eigenvalues)
        self.mode, self.checkpoint_every = check_mode(mode), checkpoint_every
        self.proj = nn.Linear(d_model, n_heads * (3 * D + 1), bias=False)
        # One matrix per head for the recurrent parts of [q; k; v; β]: a_t R gives all four.
        self.R = nn.Parameter(torch.randn(n_heads, D, 3 * D + 1) / math.sqrt(D))
        self.out = nn.Linear(n_heads * D, d_model, bias=False)

    def step(self, x_t: Tensors, state: Tensors, params: Tensors) -> tuple[torch.Tensor, Tensors]:
        (z,), (S, o_prev), (R,) = x_t, state, params
        D = self.head_dim
        pre = z + torch.einsum("bhd,hde->bhe", torch.tanh(o_prev), R)
        q, k, v, b = pre.split([D, D, D, 1], dim=-1)
        S = delta_step(S, self.phi(k), v, self.beta_scale * torch.sigmoid(b.squeeze(-1)))
        o = read(S, self.phi(q))
        return o, (S, o)

    def forward(
        self, x: torch.Tensor, state: Tensors | None = None
    ) -> tuple[torch.Tensor, Tensors]:
        z = split_heads(self.proj(x), self.n_heads)
        B, D = x.shape[0], self.head_dim
        if state is None:
            state = (z.new_zeros(B, self.n_heads, D, D), z.new_zeros(B, self.n_heads, D))
        o, state = scan(
            self.step, (z,), state, (self.R,), mode=self.mode,
            checkpoint_every=self.checkpoint_every,
        )
        return self.out(o.flatten(-2)), state


class DeltaRecurrentNet(nn.Module):
    """What the Delta RNN and the Delta LSTM share: their slow net and its projection layout.

    Each has ``n_matrices`` recurrent fast matrices per head (one for the RNN, one per gate for the
    LSTM). For each, one projection of x_t gives 5D + 2 pre-activations per head: q, k, v, b of a
    feed-forward DeltaNet and k', v', b' that program the recurrent matrix (see :meth:`project`).
    """

    layer_name: str
    n_matrices: int

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        head_dim: int | None = None,
        feature_map: str = "elu+1_sum",
        mode: str = "auto",
        chunk_size: int = 64,
        checkpoint_every: int | None = None,
    ) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim_for(d_model, n_heads, head_dim)
        D = self.head_dim
        self.phi = size_preserving_feature_map(feature_map, self.layer_name)
        self.mode, self.chunk_size = check_mode(mode), chunk_size
        self.checkpoint_every = checkpoint_every
        self.proj = nn.Linear(d_model, self.n_matrices * n_heads * (5 * D + 2), bias=False)
        self.out = nn.Linear(n_heads * D, d_model, bias=False)

    def project(self, x: torch.Tensor) -> Tensors:
        """x ``[B, T, d_model]`` → q, k, v, k', v' ``[B, T, n_matrices·H, D]``, b, b' ``[…, 1]``."""
        D = self.head_dim
        return split_heads(self.proj(x), self.n_matrices * self.n_heads).split(
            [D, D, D, D, D, 1, 1], dim=-1
        )


@register_layer("delta_rnn")
class DeltaRNN(DeltaRecurrentNet):
    """Delta RNN: a recurrent fast net whose recurrent matrix is programmed by a delta rule.

    Per head (Irie et al. 2021; the public "v2" kernel): a feed-forward DeltaNet gives
    z_t (φ = ELU+1 with sum-normalisation); the slow net also emits a recurrent key, value and rate
    k'_t (softmax), v'_t, β'_t = σ(·), and

        W_t = W_{t−1} + β'_t k'_t (v'_t − W_{t−1}ᵀ k'_t)ᵀ,    h_t = W_tᵀ softmax(h_{t−1}) + z_t,

    with h_0 = 0. State: ``(S_ff [B, H, D, D], W [B, H, D, D], h_T [B, H, D])``.
    """

    layer_name, n_matrices = "delta_rnn", 1

    @staticmethod
    def step(x_t: Tensors, state: Tensors, params: Tensors) -> tuple[torch.Tensor, Tensors]:
        (z, k, v, beta), (W, h_prev) = x_t, state
        W = delta_step(W, k, v, beta)
        h = read(W, torch.softmax(h_prev, dim=-1)) + z
        return h, (W, h)

    def forward(
        self, x: torch.Tensor, state: Tensors | None = None
    ) -> tuple[torch.Tensor, Tensors]:
        D, H = self.head_dim, self.n_heads
        q, k, v, rk, rv, b, rb = self.project(x)
        if state is None:
            zeros = q.new_zeros(x.shape[0], H, D, D)
            state = (None, zeros, q.new_zeros(x.shape[0], H, D))
        z, s_ff = delta_net(self.phi, q, k, v, b, state[0], self.mode, self.chunk_size)
        inputs = (z, torch.softmax(rk, dim=-1), rv, torch.sigmoid(rb.squeeze(-1)))
        h, (W, h_last) = scan(
            self.step, inputs, state[1:], mode=self.mode, checkpoint_every=self.checkpoint_every
        )
        return self.out(h.flatten(-2)), (s_ff, W, h_last)


@register_layer("delta_lstm")
class DeltaLSTM(DeltaRecurrentNet):
    """Delta LSTM: an LSTM whose weights are fast weights (Irie et al. 2021).

    For each of the gate i, update u and output gate o (per head): a feed-forward DeltaNet gives
    z^g_t, and a recurrent fast matrix R^g is programmed by its own delta rule with key k^g_t
    (softmax), value v^g_t and rate β^g_t from the slow net. With s = softmax(h_{t−1}):

        R^g_t = R^g_{t−1} + β^g_t k^g_t (v^g_t − R^g_{t−1}ᵀ k^g_t)ᵀ,
        i_t, u_t, o_t = σ(z^g_t + R^g_tᵀ s)            for g = i, u, o,
        c_t = (1 − i_t) ⊙ c_{t−1} + i_t ⊙ u_t,         h_t = o_t ⊙ c_t,

    the coupled-gate form of the public "v2" kernel (h_0 = c_0 = 0). State:
    ``(S_ff [B, 3H, D, D], R [B, 3, H, D, D], h_T [B, H, D], c_T [B, H, D])``.
    """

    layer_name, n_matrices = "delta_lstm", 3

    @staticmethod
    def step(x_t: Tensors, state: Tensors, params: Tensors) -> tuple[torch.Tensor, Tensors]:
        (z, k, v, beta), (R, h_prev, c_prev) = x_t, state  # z, k, v: [B, 3, H, D]
        R = delta_step(R, k, v, beta)
        s = torch.softmax(h_prev, dim=-1).unsqueeze(1)
        i, u, o = torch.sigmoid(z + read(R, s)).unbind(1)
        c = (1 - i) * c_prev + i * u
        h = o * c
        return h, (R, h, c)

    def forward(
        self, x: torch.Tensor, state: Tensors | None = None
    ) -> tuple[torch.Tensor, Tensors]:
        D, H = self.head_dim, self.n_heads
        B, T = x.shape[:2]
        # The three gates are 3H heads of one feed-forward DeltaNet and of one recurrent scan.
        q, k, v, rk, rv, b, rb = self.project(x)
        if state is None:
            state = (
                None, q.new_zeros(B, 3, H, D, D), q.new_zeros(B, H, D), q.new_zeros(B, H, D)
            )
        z, s_ff = delta_net(self.phi, q, k, v, b, state[0], self.mode, self.chunk_size)

        def gates(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(B, T, 3, H, *t.shape[3:])

        inputs = (
            gates(z), gates(torch.softmax(rk, dim=-1)), gates(rv),
            gates(torch.sigmoid(rb.squeeze(-1))),
        )
        h, final = scan(
            self.step, inputs, state[1:], mode=self.mode, checkpoint_every=self.checkpoint_every
        )
        return self.out(h.flatten(-2)), (s_ff, *final)


# --------------------------------------------------------------------------------------------
# Layers built from parallel operators.
# --------------------------------------------------------------------------------------------


@register_layer("deltadelta")
class DeltaDelta(nn.Module):
    """Delta-Delta Net: the slow net programming a DeltaNet is itself a DeltaNet (Irie et al. 2021).

    Per head, a slow DeltaNet reads x_t (q, k with φ, β = σ) and its fast output, of size 3D + 1,
    is the fast net's pre-activations [q'_t; k'_t; v'_t; b'_t]:

        [q'_t; k'_t; v'_t; b'_t] = DeltaNet_slow(x)_t,
        F_t = F_{t−1} + σ(b'_t) φ(k'_t) (v'_t − F_{t−1}ᵀ φ(k'_t))ᵀ,   o_t = F_tᵀ φ(q'_t).

    Both are delta rules, so both run chunked.
    State: ``(S_slow [B, H, D, 3D + 1], F [B, H, D, D])``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        head_dim: int | None = None,
        feature_map: str = "elu+1_sum",
        mode: str = "auto",
        chunk_size: int = 64,
    ) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim_for(d_model, n_heads, head_dim)
        D = self.head_dim
        self.phi = size_preserving_feature_map(feature_map, "deltadelta")
        self.mode, self.chunk_size = check_mode(mode), chunk_size
        self.proj = nn.Linear(d_model, n_heads * (2 * D + (3 * D + 1) + 1), bias=False)
        self.out = nn.Linear(n_heads * D, d_model, bias=False)

    def forward(
        self, x: torch.Tensor, state: Tensors | None = None
    ) -> tuple[torch.Tensor, Tensors]:
        D = self.head_dim
        q, k, v, b = split_heads(self.proj(x), self.n_heads).split([D, D, 3 * D + 1, 1], dim=-1)
        s_slow, s_fast = (None, None) if state is None else state
        fast, s_slow = delta_net(self.phi, q, k, v, b, s_slow, self.mode, self.chunk_size)
        fq, fk, fv, fb = fast.split([D, D, D, 1], dim=-1)
        o, s_fast = delta_net(self.phi, fq, fk, fv, fb, s_fast, self.mode, self.chunk_size)
        return self.out(o.flatten(-2)), (s_slow, s_fast)


@register_layer("srdelta")
class SRDelta(nn.Module):
    """SR-Delta: a self-referential weight matrix is the slow net of a DeltaNet (Irie et al. 2022).

    Per head, an SRWM (seed paper Eq. 2–4, see :func:`fwp.ops.srwm`) with D_out = 3D + 1 reads
    x_t and modifies itself; its output y_t = [q'_t; k'_t; v'_t; b'_t] programs a DeltaNet:

        F_t = F_{t−1} + σ(b'_t) φ(k'_t) (v'_t − F_{t−1}ᵀ φ(k'_t))ᵀ,   o_t = F_tᵀ φ(q'_t).

    SRWM options as in the ``"srwm"`` layer (``n_beta``, ``input_softmax``, ``init_std``,
    ``beta_init_mean``). State: ``(W [B, H, 3D + 1 + 2D + n_beta, D], F [B, H, D, D])``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        head_dim: int | None = None,
        feature_map: str = "elu+1_sum",
        n_beta: int = 1,
        input_softmax: bool = False,
        init_std: float | None = None,
        beta_init_mean: float = 0.0,
        mode: str = "auto",
        chunk_size: int = 64,
    ) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim_for(d_model, n_heads, head_dim)
        D = self.head_dim
        self.phi = size_preserving_feature_map(feature_map, "srdelta")
        self.n_beta, self.input_softmax = n_beta, input_softmax
        self.mode, self.chunk_size = check_mode(mode), chunk_size
        inner = n_heads * D
        self.inp = nn.Identity() if inner == d_model else nn.Linear(d_model, inner, bias=False)
        self.W0 = nn.Parameter(srwm_init(n_heads, 3 * D + 1, D, n_beta, init_std, beta_init_mean))
        self.out = nn.Linear(inner, d_model, bias=False)

    def forward(
        self, x: torch.Tensor, state: Tensors | None = None
    ) -> tuple[torch.Tensor, Tensors]:
        D = self.head_dim
        W, s_fast = (self.W0, None) if state is None else state
        y, W = srwm(
            split_heads(self.inp(x), self.n_heads), W, n_beta=self.n_beta,
            input_softmax=self.input_softmax, d_out=3 * D + 1, mode=op_mode(self.mode),
        )
        fq, fk, fv, fb = y.split([D, D, D, 1], dim=-1)
        o, s_fast = delta_net(self.phi, fq, fk, fv, fb, s_fast, self.mode, self.chunk_size)
        return self.out(o.flatten(-2)), (W, s_fast)


@register_layer("deltaproduct")
class DeltaProduct(nn.Module):
    """DeltaProduct (Siems et al. 2025): n_h delta-rule micro-steps per token.

    Per head and token, one query and n_h keys, values and rates (:func:`fwp.ops.delta_product`):
    S ← S + β_j φ(k_j) (v_j − Sᵀ φ(k_j))ᵀ for j = 1..n_h, then o_t = S_tᵀ φ(q_t). β_j = σ(·), or
    2σ(·) ∈ (0, 2) with ``allow_negative_eigenvalues`` (state-transition eigenvalues in (−1, 1]).
    φ = L2 normalisation by default, as in the paper. With ``n_h=1`` this is the ``"deltanet"``
    layer. State: ``S [B, H, D, D]``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        head_dim: int | None = None,
        n_h: int = 2,
        feature_map: str = "l2",
        allow_negative_eigenvalues: bool = False,
        mode: str = "auto",
        chunk_size: int = 64,
    ) -> None:
        super().__init__()
        if not isinstance(n_h, int) or n_h < 1:
            raise UserError(f"n_h (micro-steps per token) must be a positive int, got {n_h!r}")
        self.n_heads, self.head_dim = n_heads, head_dim_for(d_model, n_heads, head_dim)
        D = self.head_dim
        self.n_h, self.phi = n_h, get_feature_map(feature_map)
        self.beta_scale = beta_scale(allow_negative_eigenvalues)
        self.mode, self.chunk_size = check_mode(mode), chunk_size
        self.q = nn.Linear(d_model, n_heads * D, bias=False)
        self.k = nn.Linear(d_model, n_heads * n_h * D, bias=False)
        self.v = nn.Linear(d_model, n_heads * n_h * D, bias=False)
        self.beta = nn.Linear(d_model, n_heads * n_h)
        self.out = nn.Linear(n_heads * D, d_model, bias=False)

    def read_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """φ(q) ``[B, T, H, D]``, φ(k), v ``[B, T, H, n_h, D]`` and β ``[B, T, H, n_h]`` of
        ``x [B, T, d_model]``."""
        H, n_h = self.n_heads, self.n_h
        q = split_heads(self.q(x), H)
        k, v = (self.k(x).unflatten(-1, (H, n_h, -1)), self.v(x).unflatten(-1, (H, n_h, -1)))
        beta = self.beta_scale * torch.sigmoid(self.beta(x).unflatten(-1, (H, n_h)))
        return self.phi(q), self.phi(k), v, beta

    def forward(
        self, x: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        o, state = delta_product(
            *self.read_inputs(x), initial_state=state, output_final_state=True,
            mode=op_mode(self.mode), chunk_size=self.chunk_size,
        )
        return self.out(o.flatten(-2)), state


@register_layer("gated_deltanet")
class GatedDeltaNet(DeltaNet):
    """Gated DeltaNet (Yang, Kautz, Hatamizadeh, ICLR 2025): the delta rule with a decay α_t.

    A :class:`DeltaNet` (q, k with φ = L2 normalisation by default, v, β_t = σ(w_β · x_t)) plus
    the Mamba-2 style decay α_t = exp(g_t), g_t = −exp(A_log) · softplus(w_α · x_t + dt_bias) < 0:
    S_t = α_t S_{t−1} + β_t k_t (v_t − α_t S_{t−1}ᵀ k_t)ᵀ, o_t = S_tᵀ q_t (see
    :func:`fwp.ops.gated_delta_rule`). A = exp(A_log) starts uniform in [1, 16] and
    softplus(dt_bias) log-uniform in [0.001, 0.1], the paper's initialisation.
    ``allow_negative_eigenvalues``: β_t = 2σ(·) ∈ (0, 2), as in :class:`DeltaNet`.
    State: ``S [B, H, D, D]``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        head_dim: int | None = None,
        feature_map: str = "l2",
        allow_negative_eigenvalues: bool = False,
        mode: str = "auto",
        chunk_size: int = 64,
    ) -> None:
        super().__init__(
            d_model, n_heads, head_dim, feature_map, allow_negative_eigenvalues, check_mode(mode),
            chunk_size,
        )
        self.alpha = nn.Linear(d_model, n_heads, bias=False)
        self.A_log = nn.Parameter(torch.empty(n_heads).uniform_(1, 16).log())
        dt = torch.empty(n_heads).uniform_(math.log(1e-3), math.log(1e-1)).exp()
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)

    def forward(
        self, x: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        g = -self.A_log.exp() * F.softplus(self.alpha(x) + self.dt_bias)
        o, state = gated_delta_rule(
            *self.read_inputs(x), g, initial_state=state, output_final_state=True,
            mode=op_mode(self.mode), chunk_size=self.chunk_size,
        )
        return self.out(o.flatten(-2)), state
