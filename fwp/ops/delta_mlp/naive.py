"""One step of the Delta-MLP fast net, and the reference loop over time.

The fast net is an MLP f(x) = S_Lᵀ σ(… σ(S_1ᵀ x)) with weights S_l ``[B, H, D_in, D_out]``
(the layout of a delta-rule state). Each step takes one gradient step on the local loss
½‖f(k_t) − v_t‖² with the rate β_t, then reads f(q_t) with the new weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fwp.errors import UserError
from fwp.ops.scan import Tensors, scan_reference


def _gelu_grad(a: torch.Tensor) -> torch.Tensor:
    cdf = 0.5 * (1.0 + torch.erf(a / math.sqrt(2.0)))
    return cdf + a * torch.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)


def _silu_grad(a: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(a)
    return s * (1.0 + a * (1.0 - s))


ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "identity": (lambda a: a, torch.ones_like),
    "relu": (F.relu, lambda a: (a > 0).to(a.dtype)),
    "tanh": (torch.tanh, lambda a: 1.0 - torch.tanh(a) ** 2),
    "gelu": (F.gelu, _gelu_grad),
    "silu": (F.silu, _silu_grad),
}
"""Activation σ of the fast net's hidden layers → (σ, σ′)."""


def get_activation(name: str) -> tuple[Callable, Callable]:
    if name not in ACTIVATIONS:
        raise UserError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def forward_mlp(x: torch.Tensor, weights: Tensors, act: Callable) -> list[torch.Tensor]:
    """Pre-activations a_1 … a_L of the fast net on x ``[B, H, D]`` (a_L is the output)."""
    pre = []
    h = x
    for layer, S in enumerate(weights):
        a = (h.unsqueeze(-2) @ S).squeeze(-2)
        pre.append(a)
        h = act(a) if layer < len(weights) - 1 else a
    return pre


def delta_mlp_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                   weights: Tensors, activation: str,
                   normalize: bool = False) -> tuple[torch.Tensor, Tensors]:
    """S_l ← S_l − η_l ∂/∂S_l ½‖f(k) − v‖² for every layer (backprop by hand), then f(q).

    η_l = β, or with ``normalize`` β / max(1, ‖h_{l−1}‖²) where h_{l−1} is the layer's input
    (the normalised LMS step: a layer's own step never overshoots, whatever the size of its
    input; with unit keys the first layer's rate stays β). q, k ``[B, H, K]``, v ``[B, H, V]``,
    β ``[B, H]``. Returns ``(f(q) [B, H, V], weights)``.
    """
    act, act_grad = ACTIVATIONS[activation]
    pre = forward_mlp(k, weights, act)
    inputs = [k] + [act(a) for a in pre[:-1]]
    delta = pre[-1] - v  # ∂/∂a_L of ½‖a_L − v‖²
    new = list(weights)
    for layer in range(len(weights) - 1, -1, -1):
        S, h = weights[layer], inputs[layer]
        rate = beta / h.square().sum(-1).clamp_min(1.0) if normalize else beta
        new[layer] = S - rate[..., None, None] * (h.unsqueeze(-1) * delta.unsqueeze(-2))
        if layer > 0:
            delta = (S @ delta.unsqueeze(-1)).squeeze(-1) * act_grad(pre[layer - 1])
    return forward_mlp(q, new, act)[-1], tuple(new)


def make_step(activation: str, normalize: bool) -> Callable:
    """The step ``(x_t, state, params) → (y_t, state)`` of :mod:`fwp.ops.scan`."""

    def step(x_t: Tensors, state: Tensors, params: Tensors) -> tuple[torch.Tensor, Tensors]:
        return delta_mlp_step(*x_t, state, activation, normalize)

    return step


def delta_mlp_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                        weights: Tensors, activation: str, normalize: bool,
                        checkpoint_every: int | None = None) -> tuple[torch.Tensor, Tensors]:
    """Plain autograd loop over time (the reference)."""
    return scan_reference(make_step(activation, normalize), (q, k, v, beta), weights, ())
