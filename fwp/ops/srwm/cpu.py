"""SRWM scan fused in C++ for the CPU (``fwp/csrc/srwm_cpu.cpp``), same maths as :mod:`.scan`.

Per batch and head the kernel keeps W in a local buffer and does the whole step (Eq. 2–4) in
place; the forward saves only the per-step vectors φ(k_t), φ(q_t), s·σ(b_t), v_t − v̄_t and W_T,
and the backward rebuilds W_{t−1} = W_t − (s·σ(b_t) ⊙ (v_t − v̄_t)) ⊗ φ(k_t) in reverse, as in
:mod:`.scan`. Batch × heads run in parallel on torch's intra-op threads.
"""

from __future__ import annotations

import torch

from fwp.errors import UserError
from fwp.ops import _cpp
from fwp.ops._validation import state_dtype


class SRWMFusedCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W0, n_beta, input_softmax, rate_scale):  # noqa: ANN001
        ops = _cpp.extension()
        B = x.shape[0]
        dtype = state_dtype(x.dtype)
        xs = x.to(dtype).contiguous()
        W = W0.to(dtype).expand(B, *W0.shape[-3:])
        y, W_T, pk, pq, rate, diff = ops.srwm_forward(xs, W, n_beta, input_softmax, rate_scale)
        # x itself, not its float copy: a bfloat16 x stays half the size until the backward.
        ctx.save_for_backward(x, pk, pq, rate, diff, W_T)
        ctx.n_beta, ctx.input_softmax, ctx.W0_dim, ctx.W0_dtype = (
            n_beta, input_softmax, W0.dim(), W0.dtype
        )
        ctx.rate_scale = rate_scale
        return y.to(x.dtype), W_T

    @staticmethod
    def backward(ctx, grad_y, grad_WT):  # noqa: ANN001
        x, pk, pq, rate, diff, W_T = ctx.saved_tensors
        dtype = W_T.dtype
        grad_x, grad_W0 = _cpp.extension().srwm_backward(
            x.to(dtype).contiguous(), pk, pq, rate, diff, W_T,
            grad_y.to(dtype).contiguous(), grad_WT.to(dtype).contiguous(),
            ctx.n_beta, ctx.input_softmax, ctx.rate_scale,
        )
        if ctx.W0_dim == 3:
            grad_W0 = grad_W0.sum(dim=0)
        return grad_x.to(x.dtype), grad_W0.to(ctx.W0_dtype), None, None, None


def srwm_fused_cpu(
    x: torch.Tensor, W0: torch.Tensor, n_beta: int = 1, input_softmax: bool = False,
    rate_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fwp.ops.srwm` on the CPU with the fused C++ scan.

    Args:
        x: ``[B, T, H, D]``, any float dtype (computed in float32, or float64 for float64).
        W0: ``[H, R, D]`` or ``[B, H, R, D]``.

    Returns:
        ``(y [B, T, H, D_out] in x's dtype, W_T [B, H, R, D] in the state dtype)``.
    """
    if x.device.type != "cpu" or W0.device.type != "cpu":
        raise UserError(
            f"mode 'fused_cpu' runs on the CPU, but x is on {x.device} and W0 on {W0.device}: "
            f"move them with .cpu() or pick another mode"
        )
    return SRWMFusedCPU.apply(x, W0, n_beta, input_softmax, float(rate_scale))
