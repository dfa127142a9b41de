"""Delta-MLP: a deeper fast net trained online by one gradient step per token.

The talk's direction "make the fast net deeper and directly optimise the local self-invented
loss by backprop": the fast net is an L-layer MLP (two by default in the layer), and every write
is one step of gradient descent on ½‖f(k_t) − v_t‖² with the learned rate β_t (test-time
regression with a non-linear model, as in TTT-MLP, Sun et al. 2024). With one layer the write
is S_t = S_{t−1} + β_t k_t (v_t − S_{t−1}ᵀ k_t)ᵀ: exactly the delta rule of DeltaNet.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fwp.errors import UserError
from fwp.ops._dispatch import Mode, pick_mode
from fwp.ops._validation import check_float, check_qkv, check_same_dtype_device
from fwp.ops.delta_mlp.naive import ACTIVATIONS, delta_mlp_recurrent, get_activation, make_step
from fwp.ops.scan import scan


def delta_mlp_scan(q, k, v, beta, weights, activation, normalize,  # noqa: ANN001
                   checkpoint_every=None):
    """The checkpointed scan: O(T·D + √T·D²) saved numbers instead of a graph per step."""
    return scan(make_step(activation, normalize), (q, k, v, beta), weights, (),
                checkpoint_every=checkpoint_every)


MODES = {"recurrent": Mode(delta_mlp_recurrent), "scan": Mode(delta_mlp_scan)}
AUTO = {"default": ["scan"]}


def _batched_weights(weights: Sequence[torch.Tensor], B: int, H: int, K: int, V: int,
                     like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Check the chain K → … → V of ``[H, i, o]`` or ``[B, H, i, o]`` weights; give them a
    batch dimension."""
    if isinstance(weights, torch.Tensor) or not weights:
        raise UserError("weights must be a non-empty list of [H, D_in, D_out] (or "
                        "[B, H, D_in, D_out]) tensors, one per fast layer")
    out, size = [], K
    for i, W in enumerate(weights):
        check_float(f"weights[{i}]", W)
        check_same_dtype_device(q=like, **{f"weights[{i}]": W})
        if W.dim() == 3:
            W = W.expand(B, *W.shape)
        if W.dim() != 4 or W.shape[:2] != (B, H) or W.shape[2] != size:
            raise UserError(
                f"weights[{i}] must be [H, {size}, D_out] or [B, H, {size}, D_out] with "
                f"B, H = {B}, {H} (layer {i} reads {size} numbers), got {tuple(W.shape)}")
        out.append(W)
        size = W.shape[-1]
    if size != V:
        raise UserError(f"the last fast layer must output V = {V} numbers (the value size), "
                        f"not {size}")
    return tuple(out)


def delta_mlp(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    weights: Sequence[torch.Tensor],
    *,
    activation: str = "gelu",
    normalize: bool = False,
    mode: str = "auto",
    checkpoint_every: int | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Delta-MLP fast weights: per head, with f_t(x) = S_{L,t}ᵀ σ(… σ(S_{1,t}ᵀ x)),

        S_{l,t} = S_{l,t−1} − β_t ∂/∂S_l ½‖f_{t−1}(k_t) − v_t‖²   (l = 1 … L),
        o_t = f_t(q_t)                                           (read after the write).

    With one layer this is :func:`fwp.ops.delta_rule` with ``initial_state = weights[0]``.

    Args:
        q, k: ``[B, T, H, K]``, already feature-mapped.
        v: ``[B, T, H, V]``.
        beta: ``[B, T, H]`` learning rates of the inner gradient step.
        weights: the fast net's initial weights, one per layer, ``[H, D_in, D_out]`` (shared by
            the batch, e.g. slow parameters) or ``[B, H, D_in, D_out]`` (a state returned
            before); D_in of the first is K, D_out of the last is V.
        activation: σ of the hidden layers, one of identity, relu, tanh, gelu, silu.
        normalize: divide layer l's rate by max(1, ‖h_{l−1}‖²), the squared norm of its input
            (normalised LMS): no layer's own step overshoots; unit keys keep layer 1's β.
        mode: ``"recurrent"`` (autograd loop, the reference), ``"scan"`` (checkpointed scan:
            keeps per-step inputs and the weights every ``checkpoint_every`` steps, default
            ⌈√T⌉, and recomputes in the backward) or ``"auto"`` (scan).

    Returns:
        ``(o [B, T, H, V], final weights)``, the weights ``[B, H, D_in, D_out]`` each.
    """
    B, T, H, K, V = check_qkv(q, k, v, beta, None)
    get_activation(activation)
    state = _batched_weights(weights, B, H, K, V, q)
    impl = pick_mode("delta_mlp", mode, MODES, AUTO, q)
    return impl.fn(q, k, v, beta, state, activation, normalize, checkpoint_every)


__all__ = ["ACTIVATIONS", "delta_mlp"]
