"""SRWM scan with a memory-light backward, in plain PyTorch.

The forward keeps, per step and head, only vectors: φ(k_t), φ(q_t), σ(b_t) and
d_t = v_t − v̄_t (O(T·(R + D)) in all), plus the final matrix W_T. The backward walks time in
reverse and rebuilds each W_{t−1} = W_t − (σ(b_t) ⊙ d_t) ⊗ φ(k_t) from W_t, so it never holds
more than one matrix per head (the "memory trick" of the public kernels).

Backward of one step, with W = W_{t−1}, G = ∂L/∂W_t, u = σ(b) ⊙ d:
    ∂u = G φ(k),    ∂φ(k) += Gᵀ u,    ∂σ = ∂u ⊙ d,    ∂d = ∂u ⊙ σ(b)
    ∂φ(q) = Wᵀ ∂d,  ∂φ(k) −= Wᵀ ∂d,   ∂[y; k; q; b] = [∂y; J_φ ∂φ(k); J_φ ∂φ(q); σ' ∂σ]
    ∂x = Wᵀ ∂[y; k; q; b],            ∂L/∂W_{t−1} = G + ∂d ⊗ (φ(q) − φ(k)) + ∂[y; k; q; b] ⊗ x
"""

from __future__ import annotations

import torch

from fwp.ops._validation import state_dtype
from fwp.ops.srwm.naive import row_rates, split_rows


def softmax_backward(p: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return p * (grad - (grad * p).sum(dim=-1, keepdim=True))


def block_sum(rows: torch.Tensor, d_in: int, n_beta: int) -> torch.Tensor:
    """Inverse of :func:`row_rates`' broadcast: sum a per-row gradient over each block."""
    if n_beta == 1:
        return rows.sum(dim=-1, keepdim=True)
    return torch.stack([part.sum(dim=-1) for part in split_rows(rows, d_in, n_beta)], dim=-1)


class SRWMScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W0, n_beta, input_softmax, rate_scale):  # noqa: ANN001
        B, T, H, D = x.shape
        dtype = state_dtype(x.dtype)
        W = W0.to(dtype).expand(B, *W0.shape[-3:]).clone()
        R = W.shape[-2]
        xs = x.to(dtype)
        a_all = torch.softmax(xs, dim=-1) if input_softmax else xs
        y_all = x.new_empty(B, T, H, R - 2 * D - n_beta, dtype=dtype)
        pk_all = x.new_empty(B, T, H, D, dtype=dtype)
        pq_all = x.new_empty(B, T, H, D, dtype=dtype)
        rate_all = x.new_empty(B, T, H, n_beta, dtype=dtype)
        d_all = x.new_empty(B, T, H, R, dtype=dtype)
        for t, a in enumerate(a_all.unbind(1)):
            y, k, q, b = split_rows((W @ a.unsqueeze(-1)).squeeze(-1), D, n_beta)
            pk, pq = torch.softmax(k, dim=-1), torch.softmax(q, dim=-1)
            v_both = W @ torch.stack([pq, pk], dim=-1)
            d = v_both[..., 0] - v_both[..., 1]
            rate = rate_scale * torch.sigmoid(b)
            u = row_rates(rate, D, n_beta, R) * d
            W.add_(u.unsqueeze(-1) * pk.unsqueeze(-2))
            y_all[:, t], pk_all[:, t], pq_all[:, t], rate_all[:, t], d_all[:, t] = (
                y, pk, pq, rate, d
            )
        ctx.save_for_backward(x, pk_all, pq_all, rate_all, d_all, W)
        ctx.n_beta, ctx.input_softmax, ctx.W0_shape, ctx.W0_dtype = (
            n_beta, input_softmax, W0.shape, W0.dtype
        )
        ctx.rate_scale = rate_scale
        return y_all.to(x.dtype), W.clone()

    @staticmethod
    def backward(ctx, grad_y, grad_WT):  # noqa: ANN001
        x, pk_all, pq_all, rate_all, d_all, W_T = ctx.saved_tensors
        n_beta = ctx.n_beta
        B, T, H, D = x.shape
        dtype = W_T.dtype
        R = W_T.shape[-2]
        W = W_T.clone()
        G = grad_WT.to(dtype).clone()
        grad_y = grad_y.to(dtype)
        xs = x.to(dtype)
        a_all = torch.softmax(xs, dim=-1) if ctx.input_softmax else xs
        grad_a = torch.empty_like(a_all)
        for t in range(T - 1, -1, -1):
            pk, pq, rate, d, a = (s[:, t] for s in (pk_all, pq_all, rate_all, d_all, a_all))
            rate_rows = row_rates(rate, D, n_beta, R)
            u = rate_rows * d
            W.sub_(u.unsqueeze(-1) * pk.unsqueeze(-2))  # W now holds W_{t−1}
            grad_u = (G @ pk.unsqueeze(-1)).squeeze(-1)
            grad_pk = (G.transpose(-1, -2) @ u.unsqueeze(-1)).squeeze(-1)
            grad_rate = block_sum(grad_u * d, D, n_beta)
            grad_d = grad_u * rate_rows
            grad_b = grad_rate * rate * (1 - rate / ctx.rate_scale)  # rate = s σ(b)
            # Wᵀ ∂d feeds both φ(q) and φ(k); one product serves the output path too.
            wt_grad_d = (W.transpose(-1, -2) @ grad_d.unsqueeze(-1)).squeeze(-1)
            grad_pq = wt_grad_d
            grad_pk = grad_pk - wt_grad_d
            grad_k, grad_q = softmax_backward(pk, grad_pk), softmax_backward(pq, grad_pq)
            grad_out = torch.cat([grad_y[:, t], grad_k, grad_q, grad_b], dim=-1)
            grad_a[:, t] = (W.transpose(-1, -2) @ grad_out.unsqueeze(-1)).squeeze(-1)
            G.add_(grad_d.unsqueeze(-1) * (pq - pk).unsqueeze(-2))
            G.add_(grad_out.unsqueeze(-1) * a.unsqueeze(-2))
        grad_x = softmax_backward(a_all, grad_a) if ctx.input_softmax else grad_a
        grad_W0 = G if len(ctx.W0_shape) == 4 else G.sum(dim=0)
        return grad_x.to(x.dtype), grad_W0.to(ctx.W0_dtype), None, None, None


def srwm_scan(
    x: torch.Tensor, W0: torch.Tensor, n_beta: int = 1, input_softmax: bool = False,
    rate_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    return SRWMScan.apply(x, W0, n_beta, input_softmax, float(rate_scale))
