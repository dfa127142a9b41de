"""Delta rule fused in C++ for the CPU (``fwp/csrc/delta_rule_cpu.cpp``), step by step.

Per batch and head the kernel keeps S in a local buffer; the forward saves only
d_t = v_t − S_{t−1}ᵀ k_t per step (the size of v) and S_T, and the backward rebuilds
S_{t−1} = S_t − β_t k_t d_tᵀ in reverse. Batch × heads run in parallel on torch's intra-op
threads.

The forward and the backward are ``torch.library`` custom operators (``torch.ops.fwp.
delta_rule_fused_cpu`` and ``..._backward``) with fake implementations (output shapes without
running) and the autograd formula registered on the forward, so ``torch.compile`` traces a
model through them with ``fullgraph=True`` and calls the compiled kernels as opaque steps.
"""

from __future__ import annotations

import torch

from fwp.errors import UserError
from fwp.ops import _cpp
from fwp.ops._validation import state_dtype

Tensor = torch.Tensor


@torch.library.custom_op("fwp::delta_rule_fused_cpu", mutates_args=())
def _forward(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, initial_state: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """``(o in q's dtype, S_T, d = v − S_{t−1}ᵀ k [B, H, T, V])``, S_T and d in the state dtype."""
    ops = _cpp.extension()
    dtype = state_dtype(q.dtype)
    qs, ks, vs, bs = (t.to(dtype).contiguous() for t in (q, k, v, beta))
    s0 = None if initial_state is None else initial_state.to(dtype).contiguous()
    o, S_T, diff = ops.delta_rule_forward(qs, ks, vs, bs, s0)
    return o.to(q.dtype), S_T, diff


@_forward.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, initial_state: Tensor | None):  # noqa: ANN202
    B, T, H, K = k.shape
    V, dtype = v.shape[-1], state_dtype(q.dtype)
    return (q.new_empty(B, T, H, V), q.new_empty(B, H, K, V, dtype=dtype),
            q.new_empty(B, H, T, V, dtype=dtype))


@torch.library.custom_op("fwp::delta_rule_fused_cpu_backward", mutates_args=())
def _backward(
    q: Tensor, k: Tensor, beta: Tensor, diff: Tensor, S_T: Tensor, grad_o: Tensor,
    grad_ST: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(∂q, ∂k, ∂v, ∂β, ∂S_0)`` in the state dtype."""
    dtype = S_T.dtype
    qs, ks, bs = (t.to(dtype).contiguous() for t in (q, k, beta))
    grads = _cpp.extension().delta_rule_backward(
        qs, ks, bs, diff, S_T, grad_o.to(dtype).contiguous(), grad_ST.to(dtype).contiguous()
    )
    return tuple(grads)


@_backward.register_fake
def _(q, k, beta, diff, S_T, grad_o, grad_ST):  # noqa: ANN001, ANN202
    dtype = S_T.dtype
    return (q.new_empty(q.shape, dtype=dtype), k.new_empty(k.shape, dtype=dtype),
            diff.new_empty(grad_o.shape), beta.new_empty(beta.shape, dtype=dtype),
            S_T.new_empty(S_T.shape))


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    q, k, v, beta, initial_state = inputs
    _, S_T, diff = output
    ctx.save_for_backward(q, k, beta, diff, S_T)
    ctx.v_dtype = v.dtype
    ctx.state_dtype = None if initial_state is None else initial_state.dtype


def _autograd(ctx, grad_o, grad_ST, grad_diff):  # noqa: ANN001, ANN202
    q, k, beta, diff, S_T = ctx.saved_tensors
    if grad_o is None:
        grad_o = diff.new_zeros(diff.shape[0], diff.shape[2], diff.shape[1], diff.shape[3])
    grad_ST = torch.zeros_like(S_T) if grad_ST is None else grad_ST
    grad_q, grad_k, grad_v, grad_beta, grad_S0 = _backward(q, k, beta, diff, S_T, grad_o,
                                                           grad_ST)
    grad_S0 = None if ctx.state_dtype is None else grad_S0.to(ctx.state_dtype)
    return (grad_q.to(q.dtype), grad_k.to(k.dtype), grad_v.to(ctx.v_dtype),
            grad_beta.to(beta.dtype), grad_S0)


_forward.register_autograd(_autograd, setup_context=_setup_context)


def delta_rule_fused_cpu(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`fwp.ops.delta_rule` on the CPU with the fused C++ recurrence.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; beta: ``[B, T, H]``; any float dtype
            (computed in float32, or float64 for float64).
        initial_state: ``[B, H, K, V]`` or ``None`` (zeros).

    Returns:
        ``(o [B, T, H, V] in q's dtype, S_T [B, H, K, V] in the state dtype, or None)``.
    """
    tensors = {"q": q, "k": k, "v": v, "beta": beta, "initial_state": initial_state}
    for name, t in tensors.items():
        if t is not None and t.device.type != "cpu":
            raise UserError(
                f"mode 'fused_cpu' runs on the CPU, but {name} is on {t.device}: "
                f"move the tensors with .cpu() or pick another mode"
            )
    o, S_T, _ = _forward(q, k, v, beta, initial_state)
    return o, (S_T if output_final_state else None)
