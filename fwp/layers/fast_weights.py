"""Multi-head fast weight layers that replace self-attention: sum rule, delta rule, SRWM."""

from __future__ import annotations

import math

import torch
from torch import nn

from fwp.errors import UserError
from fwp.layers.registry import register_layer
from fwp.ops import delta_rule, feature_dim, get_feature_map, linear_attention, srwm, srwm_rows


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[B, T, H·D] → [B, T, H, D]."""
    return x.unflatten(-1, (n_heads, -1))


def beta_scale(allow_negative_eigenvalues: bool) -> float:
    """The factor s of a delta rule's rate β = s·σ(·): 2 gives β ∈ (0, 2) (Grazzi et al., ICLR
    2025: eigenvalues 1 − β‖k‖² of the state transition in (−1, 1) for unit keys), 1 gives
    (0, 1)."""
    if not isinstance(allow_negative_eigenvalues, bool):
        raise UserError(
            f"allow_negative_eigenvalues must be true or false, got {allow_negative_eigenvalues!r}"
        )
    return 2.0 if allow_negative_eigenvalues else 1.0


def head_dim_for(d_model: int, n_heads: int, head_dim: int | None) -> int:
    if head_dim is not None:
        return head_dim
    if d_model % n_heads:
        raise UserError(
            f"d_model = {d_model} is not divisible by n_heads = {n_heads}: "
            f"change one of them or pass head_dim"
        )
    return d_model // n_heads


def srwm_init(
    n_heads: int,
    d_out: int,
    head_dim: int,
    n_beta: int = 1,
    init_std: float | None = None,
    beta_init_mean: float = 0.0,
    key_identity: float = 0.0,
    query_init_scale: float = 1.0,
) -> torch.Tensor:
    """W0 ``[H, R, D]`` of an SRWM with rows y (d_out), k, q (D each), β (n_beta), as in the
    public SRWM code (IDSIA/modern-srwm): every entry N(0, init_std²), init_std = 1/√D by
    default, the query rows' std times ``query_init_scale``; the β rows' mean
    ``beta_init_mean``; ``key_identity`` = c adds c·I to the key block (our option)."""
    D = head_dim
    std = 1.0 / math.sqrt(D) if init_std is None else init_std
    W0 = torch.randn(n_heads, srwm_rows(d_out, D, n_beta), D) * std
    W0[:, d_out + D : d_out + 2 * D] *= query_init_scale
    W0[:, -n_beta:] += beta_init_mean
    W0[:, d_out : d_out + D] += key_identity * torch.eye(D)
    return W0


@register_layer("linear")
class LinearAttention(nn.Module):
    """Linear transformer / sum-rule FWP (Katharopoulos et al. 2020; Schlag et al. 2021).

    q, k, v = projections of x; S_t = S_{t−1} + φ(k_t) v_tᵀ; o_t = S_tᵀ φ(q_t), divided by
    φ(q_t)·Σ_{τ≤t} φ(k_τ) when ``normalize``. The normaliser rides along as an extra value
    column of ones, so the state is ``[B, H, K, V + 1]`` when normalised.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        head_dim: int | None = None,
        feature_map: str = "elu+1",
        normalize: bool = True,
        eps: float = 1e-5,
        mode: str = "auto",
        chunk_size: int = 64,
    ) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim_for(d_model, n_heads, head_dim)
        self.phi = get_feature_map(feature_map)
        self.key_dim = feature_dim(feature_map, self.head_dim)
        self.normalize, self.eps, self.mode, self.chunk_size = normalize, eps, mode, chunk_size
        self.qkv = nn.Linear(d_model, 3 * n_heads * self.head_dim, bias=False)
        self.out = nn.Linear(n_heads * self.head_dim, d_model, bias=False)

    def read_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """φ(q), φ(k) ``[B, T, H, K]`` and v ``[B, T, H, D]`` of ``x [B, T, d_model]`` (v without
        the normaliser's column of ones)."""
        q, k, v = split_heads(self.qkv(x), self.n_heads).chunk(3, dim=-1)
        return self.phi(q), self.phi(k), v

    def forward(
        self, x: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, v = self.read_inputs(x)
        if self.normalize:
            v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
        o, state = linear_attention(
            q, k, v, initial_state=state, output_final_state=True,
            mode=self.mode, chunk_size=self.chunk_size,
        )
        if self.normalize:
            o = o[..., :-1] / (o[..., -1:] + self.eps)
        return self.out(o.flatten(-2)), state


@register_layer("deltanet")
class DeltaNet(nn.Module):
    """DeltaNet (Schlag, Irie, Schmidhuber 2021): delta-rule fast weights.

    q, k, v = projections of x, β_t = σ(w_β · x_t) per head; keys and queries go through φ
    (ELU+1 with sum-normalisation by default, as in the paper).

    ``allow_negative_eigenvalues``: β_t = 2σ(w_β · x_t) ∈ (0, 2) instead (Grazzi et al., ICLR
    2025). The write is S_t = (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ; the transition's
    eigenvalue along k_t is 1 − β_t‖k_t‖², in (−1, 1) instead of (0, 1) for unit keys
    (``feature_map="l2"``), so the state can flip sign, which parity needs.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        head_dim: int | None = None,
        feature_map: str = "elu+1_sum",
        allow_negative_eigenvalues: bool = False,
        mode: str = "auto",
        chunk_size: int = 64,
    ) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim_for(d_model, n_heads, head_dim)
        self.phi = get_feature_map(feature_map)
        self.beta_scale = beta_scale(allow_negative_eigenvalues)
        self.mode, self.chunk_size = mode, chunk_size
        self.qkv = nn.Linear(d_model, 3 * n_heads * self.head_dim, bias=False)
        self.beta = nn.Linear(d_model, n_heads)
        self.out = nn.Linear(n_heads * self.head_dim, d_model, bias=False)

    def read_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """φ(q), φ(k), v ``[B, T, H, D]`` and β ``[B, T, H]`` of ``x [B, T, d_model]``."""
        q, k, v = split_heads(self.qkv(x), self.n_heads).chunk(3, dim=-1)
        return self.phi(q), self.phi(k), v, self.beta_scale * torch.sigmoid(self.beta(x))

    def forward(
        self, x: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        o, state = delta_rule(
            *self.read_inputs(x), initial_state=state, output_final_state=True,
            mode=self.mode, chunk_size=self.chunk_size,
        )
        return self.out(o.flatten(-2)), state


@register_layer("srwm")
class SRWM(nn.Module):
    """Modern self-referential weight matrix layer (Irie et al. 2022; seed paper Eq. 2–4).

    The input is split into heads (projected first if d_model ≠ n_heads·head_dim); each head has
    its own self-modifying matrix W0 ∈ R^{R×D}, R = 3D + n_beta, the layer's only slow weights
    besides the output projection. The state is the per-sequence matrix ``[B, H, R, D]``.

    Init as in the public code (:func:`srwm_init`): each block N(0, init_std²) with
    init_std = 1/√D by default, and the β block's mean ``beta_init_mean`` (0: rates start around
    σ(0) = ½).

    ``allow_negative_eigenvalues``: rates 2σ(b) ∈ (0, 2) (``rate_scale=2`` of
    :func:`fwp.ops.srwm`), the SRWM's counterpart of DeltaNet's β ∈ (0, 2).

    ``query_init_scale`` multiplies the init std of the query block (rows 2D … 3D of the y, k,
    q, β order): the public formal-language code draws it with std 0.01/√D (0.01).

    ``key_identity`` = c adds c·I to the key block of W0 (our option, off by default). A later
    read by input x weighs write τ by φ(k_τ)·x (:func:`fwp.dual.srwm_contributions`); with
    k_τ ≈ c·x_τ that weight is softmax(c·x_τ)·x, a similarity of the two inputs from the first
    step, where a random key block gives none. On in-context classification this removes the
    long chance-level plateau of the public init (``docs/fewshot.md`` has the measurements).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        head_dim: int | None = None,
        n_beta: int = 1,
        input_softmax: bool = False,
        init_std: float | None = None,
        beta_init_mean: float = 0.0,
        query_init_scale: float = 1.0,
        key_identity: float = 0.0,
        allow_negative_eigenvalues: bool = False,
        mode: str = "auto",
    ) -> None:
        super().__init__()
        self.rate_scale = beta_scale(allow_negative_eigenvalues)
        self.n_heads, self.head_dim = n_heads, head_dim_for(d_model, n_heads, head_dim)
        D = self.head_dim
        self.n_beta, self.input_softmax, self.mode = n_beta, input_softmax, mode
        inner = n_heads * D
        self.inp = nn.Identity() if inner == d_model else nn.Linear(d_model, inner, bias=False)
        self.W0 = nn.Parameter(
            srwm_init(n_heads, D, D, n_beta, init_std, beta_init_mean, key_identity,
                      query_init_scale)
        )
        self.out = nn.Linear(inner, d_model, bias=False)

    def shift_blocks(self, state: torch.Tensor) -> list[torch.Tensor]:
        """The shift W − W0 of a state ``[B, H, R, D]``, split into its blocks y, k, q, β
        (``[B, H, rows, D]`` each): the fast weights the public code compares in its
        ``weights`` bootstrap target."""
        D = self.head_dim
        return list((state - self.W0).split([D, D, D, self.n_beta], dim=-2))

    def read_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """The SRWM's input per head, ``(x_h [B, T, H, D],)`` of ``x [B, T, d_model]`` (before
        the optional input softmax, which the operator applies)."""
        return (split_heads(self.inp(x), self.n_heads),)

    def forward(
        self, x: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        W = self.W0 if state is None else state
        y, state = srwm(*self.read_inputs(x), W, n_beta=self.n_beta,
                        input_softmax=self.input_softmax, rate_scale=self.rate_scale,
                        mode=self.mode)
        return self.out(y.flatten(-2)), state
