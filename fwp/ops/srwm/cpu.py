"""SRWM scan fused in C++ for the CPU (``fwp/csrc/srwm_cpu.cpp``), same maths as :mod:`.scan`.

Per batch and head the kernel keeps W in a local buffer and does the whole step (Eq. 2–4) in
place; the forward saves only the per-step vectors φ(k_t), φ(q_t), s·σ(b_t), v_t − v̄_t and W_T,
and the backward rebuilds W_{t−1} = W_t − (s·σ(b_t) ⊙ (v_t − v̄_t)) ⊗ φ(k_t) in reverse, as in
:mod:`.scan`. Batch × heads run in parallel on torch's intra-op threads.

The forward and the backward are ``torch.library`` custom operators (``torch.ops.fwp.
srwm_fused_cpu`` and ``..._backward``) with fake implementations and the autograd formula
registered on the forward, so ``torch.compile`` traces through them with ``fullgraph=True``.
"""

from __future__ import annotations

import torch

from fwp.errors import UserError
from fwp.ops import _cpp
from fwp.ops._validation import state_dtype
from fwp.ops.srwm._custom_op import register_srwm_op

Tensor = torch.Tensor


@torch.library.custom_op("fwp::srwm_fused_cpu", mutates_args=())
def _forward(
    x: Tensor, W0: Tensor, n_beta: int, input_softmax: bool, rate_scale: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(y in x's dtype, W_T, φ(k), φ(q), s·σ(b), v − v̄)``, the last five in the state dtype."""
    ops = _cpp.extension()
    dtype = state_dtype(x.dtype)
    W = W0.to(dtype).expand(x.shape[0], *W0.shape[-3:])
    y, W_T, pk, pq, rate, diff = ops.srwm_forward(x.to(dtype).contiguous(), W, n_beta,
                                                  input_softmax, rate_scale)
    return y.to(x.dtype), W_T, pk, pq, rate, diff


@torch.library.custom_op("fwp::srwm_fused_cpu_backward", mutates_args=())
def _backward(
    x: Tensor, pk: Tensor, pq: Tensor, rate: Tensor, diff: Tensor, W_T: Tensor, grad_y: Tensor,
    grad_WT: Tensor, n_beta: int, input_softmax: bool, rate_scale: float,
) -> tuple[Tensor, Tensor]:
    """``(∂x, ∂W0 per sequence [B, H, R, D])`` in the state dtype."""
    dtype = W_T.dtype
    grad_x, grad_W0 = _cpp.extension().srwm_backward(
        x.to(dtype).contiguous(), pk, pq, rate, diff, W_T, grad_y.to(dtype).contiguous(),
        grad_WT.to(dtype).contiguous(), n_beta, input_softmax, rate_scale,
    )
    return grad_x, grad_W0


@_backward.register_fake
def _(x, pk, pq, rate, diff, W_T, grad_y, grad_WT, n_beta, input_softmax, rate_scale):  # noqa: ANN001, ANN202
    return x.new_empty(x.shape, dtype=W_T.dtype), W_T.new_empty(W_T.shape)


register_srwm_op(_forward, _backward)


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
    y, W_T, *_ = _forward(x, W0, n_beta, input_softmax, float(rate_scale))
    return y, W_T
