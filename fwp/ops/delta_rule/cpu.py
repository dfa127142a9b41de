"""Delta rule fused in C++ for the CPU (``fwp/csrc/delta_rule_cpu.cpp``), step by step.

Per batch and head the kernel keeps S in a local buffer; the forward saves only
d_t = v_t − S_{t−1}ᵀ k_t per step (the size of v) and S_T, and the backward rebuilds
S_{t−1} = S_t − β_t k_t d_tᵀ in reverse. Batch × heads run in parallel on torch's intra-op
threads.
"""

from __future__ import annotations

import torch

from fwp.errors import UserError
from fwp.ops import _cpp
from fwp.ops._validation import state_dtype


class DeltaRuleFusedCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, beta, initial_state):  # noqa: ANN001 — autograd signature
        ops = _cpp.extension()
        dtype = state_dtype(q.dtype)
        qs, ks, vs, bs = (t.to(dtype).contiguous() for t in (q, k, v, beta))
        s0 = None if initial_state is None else initial_state.to(dtype).contiguous()
        o, S_T, diff = ops.delta_rule_forward(qs, ks, vs, bs, s0)
        ctx.save_for_backward(q, k, beta, diff, S_T)
        ctx.v_dtype = v.dtype
        ctx.state_dtype = None if initial_state is None else initial_state.dtype
        return o.to(q.dtype), S_T

    @staticmethod
    def backward(ctx, grad_o, grad_ST):  # noqa: ANN001
        q, k, beta, diff, S_T = ctx.saved_tensors
        dtype = S_T.dtype
        qs, ks, bs = (t.to(dtype).contiguous() for t in (q, k, beta))
        grad_q, grad_k, grad_v, grad_beta, grad_S0 = _cpp.extension().delta_rule_backward(
            qs, ks, bs, diff, S_T, grad_o.to(dtype).contiguous(), grad_ST.to(dtype).contiguous()
        )
        grad_S0 = None if ctx.state_dtype is None else grad_S0.to(ctx.state_dtype)
        return (
            grad_q.to(q.dtype), grad_k.to(k.dtype), grad_v.to(ctx.v_dtype),
            grad_beta.to(beta.dtype), grad_S0,
        )


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
    o, S_T = DeltaRuleFusedCPU.apply(q, k, v, beta, initial_state)
    return o, (S_T if output_final_state else None)
