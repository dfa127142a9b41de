"""Deeper fast nets, trained at test time beyond one linear delta step: the Delta-MLP and the
Mesa layer.

- ``"delta_mlp"``: the fast net is an MLP (two layers by default) whose weights take one
  gradient step on ½‖f(k_t) − v_t‖² per token with a learned rate (:func:`fwp.ops.delta_mlp`);
  with ``depth=1`` and ``activation="identity"`` it is DeltaNet.
- ``"mesa"``: the Mesa layer of MesaNet (von Oswald et al. 2025): the output of the linear fast
  net that minimises the discounted, ridge-regularised squared error over the whole past,
  solved by conjugate gradients (:func:`fwp.ops.mesa`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fwp.errors import UserError
from fwp.layers.fast_weights import head_dim_for, split_heads
from fwp.layers.recurrent import check_mode
from fwp.layers.registry import register_layer
from fwp.ops import get_feature_map
from fwp.ops.delta_mlp import delta_mlp, get_activation
from fwp.ops.mesa import mesa

Tensors = tuple[torch.Tensor, ...]


@register_layer("delta_mlp")
class DeltaMLP(nn.Module):
    """Delta-MLP: a deeper fast net programmed by gradient descent on its local loss.

    Per head, q, k, v = projections of x (φ on q and k, L2 normalisation by default), the rate
    β_t = σ(w_β · x_t), and a fast MLP f(x) = S_Lᵀ σ(… σ(S_1ᵀ x)) of ``depth`` layers
    (hidden width ``hidden``, default 2·head_dim) whose weights start at learned slow weights
    W_l (N(0, 1/D_in) per entry; zeros when ``depth=1``, DeltaNet's empty memory) and take
    one gradient step per token:

        S_{l,t} = S_{l,t−1} − η_{l,t} ∂/∂S_l ½‖f_{t−1}(k_t) − v_t‖²,    o_t = f_t(q_t),

    with η_{l,t} = β_t / max(1, ‖h_{l−1,t}‖²), h_{l−1,t} the layer's input (``normalize``, our
    choice: the plain step β_t diverged on code execution within one sequence for 2 of 8 random
    inits at width 16; ``normalize=False`` gives η = β_t). With ``depth=1``,
    ``activation="identity"`` and unit keys (φ = l2) this is the ``"deltanet"`` layer (tested).
    State: the fast weights ``(S_1 [B, H, K, hidden], …, S_L [B, H, hidden, V])``.
    ``mode="recurrent"`` runs the reference autograd loop, ``"auto"`` the checkpointed scan.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        head_dim: int | None = None,
        depth: int = 2,
        hidden: int | None = None,
        activation: str = "gelu",
        feature_map: str = "l2",
        normalize: bool = True,
        mode: str = "auto",
        checkpoint_every: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 1:
            raise UserError(f"depth (layers of the fast net) must be a positive int, got {depth!r}")
        self.n_heads, self.head_dim = n_heads, head_dim_for(d_model, n_heads, head_dim)
        D = self.head_dim
        hidden = 2 * D if hidden is None else hidden
        if not isinstance(hidden, int) or hidden < 1:
            raise UserError(f"hidden (the fast net's width) must be a positive int, got {hidden!r}")
        get_activation(activation)
        self.activation, self.phi = activation, get_feature_map(feature_map)
        self.normalize = normalize
        if feature_map.startswith("dpfp"):
            raise UserError("delta_mlp needs a size-preserving feature map, not dpfp")
        self.mode, self.checkpoint_every = check_mode(mode), checkpoint_every
        self.qkv = nn.Linear(d_model, 3 * n_heads * D, bias=False)
        self.beta = nn.Linear(d_model, n_heads)
        sizes = [D] + [hidden] * (depth - 1) + [D]
        self.W0 = nn.ParameterList(
            nn.Parameter(torch.randn(n_heads, i, o) / math.sqrt(i) if depth > 1
                         else torch.zeros(n_heads, i, o))
            for i, o in zip(sizes[:-1], sizes[1:])
        )
        self.out = nn.Linear(n_heads * D, d_model, bias=False)

    def read_inputs(self, x: torch.Tensor) -> Tensors:
        """φ(q), φ(k), v ``[B, T, H, D]`` and β ``[B, T, H]`` of ``x [B, T, d_model]``."""
        q, k, v = split_heads(self.qkv(x), self.n_heads).chunk(3, dim=-1)
        return self.phi(q), self.phi(k), v, torch.sigmoid(self.beta(x))

    def forward(
        self, x: torch.Tensor, state: Tensors | None = None
    ) -> tuple[torch.Tensor, Tensors]:
        weights = tuple(self.W0) if state is None else state
        o, state = delta_mlp(
            *self.read_inputs(x), weights, activation=self.activation, normalize=self.normalize,
            mode="recurrent" if self.mode == "recurrent" else "scan",
            checkpoint_every=self.checkpoint_every,
        )
        return self.out(o.flatten(-2)), state


@register_layer("mesa")
class Mesa(nn.Module):
    """The Mesa layer of MesaNet (von Oswald et al. 2025).

    Per head: q, k = L2-normalised projections of x, v a projection, the input gate
    β_t = σ(w_β · x_t + b_β), the forget gate γ_t = σ(w_γ · x_t + b_γ) and the ridge
    λ = softplus(ρ) + ``lambda_min`` per key dimension (λ starts at 1, the lower bound 0.25, as
    in the public MesaNet layer). The output is o_t = G_tᵀ (H_t + diag λ)⁻¹ q_t, solved by
    ``cg_steps`` conjugate-gradient iterations (:func:`fwp.ops.mesa`), RMS-normalised per head,
    then projected. Our choices where the paper's layer differs: no short convolution on q, k
    (no other layer here has one), and b_γ starts at 3 (γ ≈ 0.95, a long memory from the first
    step; a zero bias would start at γ = ½). State: ``(H [B, H, D, D], G [B, H, D, D])``.
    ``mode``: ``"auto"`` (chunked CG), ``"recurrent"`` (CG per step) or ``"exact"``
    (``torch.linalg.solve`` per step).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        head_dim: int | None = None,
        cg_steps: int = 30,
        lambda_init: float = 1.0,
        lambda_min: float = 0.25,
        forget_bias: float = 3.0,
        mode: str = "auto",
        chunk_size: int = 64,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if mode not in ("auto", "recurrent", "exact"):
            raise UserError(f"unknown mode {mode!r}; choose 'auto' (chunked CG), 'recurrent' "
                            f"(CG per step) or 'exact' (torch.linalg.solve per step)")
        if not lambda_init > lambda_min >= 0:
            raise UserError(f"need lambda_init > lambda_min >= 0, got {lambda_init} and "
                            f"{lambda_min}")
        self.n_heads, self.head_dim = n_heads, head_dim_for(d_model, n_heads, head_dim)
        D = self.head_dim
        self.cg_steps, self.lambda_min, self.mode = cg_steps, lambda_min, mode
        self.chunk_size, self.eps = chunk_size, eps
        self.qkv = nn.Linear(d_model, 3 * n_heads * D, bias=False)
        self.gates = nn.Linear(d_model, 2 * n_heads)
        with torch.no_grad():
            self.gates.bias[n_heads:].fill_(forget_bias)
        rho = math.log(math.expm1(lambda_init - lambda_min))  # softplus⁻¹
        self.rho = nn.Parameter(torch.full((n_heads, D), rho))
        self.norm_weight = nn.Parameter(torch.ones(D))
        self.out = nn.Linear(n_heads * D, d_model, bias=False)

    def read_inputs(self, x: torch.Tensor) -> Tensors:
        """q, k (L2-normalised), v ``[B, T, H, D]``, β, g = log γ ``[B, T, H]`` and λ ``[H, D]``
        of ``x [B, T, d_model]``."""
        q, k, v = split_heads(self.qkv(x), self.n_heads).chunk(3, dim=-1)
        b, a = self.gates(x).chunk(2, dim=-1)
        lamb = F.softplus(self.rho) + self.lambda_min
        return (F.normalize(q, dim=-1), F.normalize(k, dim=-1), v, torch.sigmoid(b),
                F.logsigmoid(a), lamb.to(x.dtype))

    def forward(
        self, x: torch.Tensor, state: Tensors | None = None
    ) -> tuple[torch.Tensor, Tensors]:
        o, state = mesa(
            *self.read_inputs(x), initial_state=state, output_final_state=True,
            mode="chunk" if self.mode == "auto" else self.mode, cg_steps=self.cg_steps,
            chunk_size=self.chunk_size,
        )
        o = o * torch.rsqrt(o.square().mean(-1, keepdim=True) + self.eps) * self.norm_weight
        return self.out(o.flatten(-2)), state
