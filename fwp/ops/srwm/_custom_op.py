"""The fake forward and the autograd formula of the fused SRWM operators (C++ and Triton).

Each supplies a ``torch.library`` forward returning ``(y, W_T, φ(k), φ(q), s·σ(b), v − v̄)``
and a backward operator returning ``(∂x, ∂W0 per sequence [B, H, R, D])``; the backward
rebuilds W_{t−1} from W_t in reverse (see :mod:`fwp.ops.srwm.scan`).
"""

from __future__ import annotations

from typing import Any

import torch

from fwp.ops._validation import state_dtype


def register_srwm_op(forward: Any, backward: Any) -> None:
    """Register on the custom op ``forward`` its fake (the output shapes and dtypes, for
    ``torch.compile``) and the gradient computed by ``backward``."""

    def fake(x, W0, n_beta, input_softmax, rate_scale):  # noqa: ANN001, ANN202
        B, T, H, D = x.shape
        R = W0.shape[-2]
        vectors = dict(dtype=state_dtype(x.dtype))
        return (x.new_empty(B, T, H, R - 2 * D - n_beta), x.new_empty(B, H, R, D, **vectors),
                x.new_empty(B, H, T, D, **vectors), x.new_empty(B, H, T, D, **vectors),
                x.new_empty(B, H, T, n_beta, **vectors), x.new_empty(B, H, T, R, **vectors))

    def setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
        x, W0, n_beta, input_softmax, rate_scale = inputs
        _, W_T, pk, pq, rate, diff = output
        # x itself, not its float copy: a bfloat16 x stays half the size until the backward.
        ctx.save_for_backward(x, pk, pq, rate, diff, W_T)
        ctx.n_beta, ctx.input_softmax, ctx.rate_scale = n_beta, input_softmax, rate_scale
        ctx.W0_dim, ctx.W0_dtype = W0.dim(), W0.dtype

    def autograd(ctx, grad_y, grad_WT, *unused):  # noqa: ANN001, ANN202
        x, pk, pq, rate, diff, W_T = ctx.saved_tensors
        if grad_y is None:
            grad_y = x.new_zeros(*x.shape[:3], W_T.shape[-2] - 2 * x.shape[-1] - ctx.n_beta)
        grad_WT = torch.zeros_like(W_T) if grad_WT is None else grad_WT
        grad_x, grad_W0 = backward(x, pk, pq, rate, diff, W_T, grad_y, grad_WT, ctx.n_beta,
                                   ctx.input_softmax, ctx.rate_scale)
        if ctx.W0_dim == 3:  # W0 shared by the batch: sum the per-sequence gradients
            grad_W0 = grad_W0.sum(dim=0)
        return grad_x.to(x.dtype), grad_W0.to(ctx.W0_dtype), None, None, None

    forward.register_fake(fake)
    forward.register_autograd(autograd, setup_context=setup_context)
