"""Reference loop for the modern self-referential weight matrix (seed paper Eq. 2–4).

Autograd differentiates through every step, so it stores the T intermediate matrices: use it
to check the fast forms, not to train.
"""

from __future__ import annotations

import torch

from fwp.ops._validation import state_dtype


def split_rows(out: torch.Tensor, d_in: int, n_beta: int) -> tuple[torch.Tensor, ...]:
    """Split W x = [y; k; q; b] along the last dimension (the paper's row order)."""
    d_out = out.shape[-1] - 2 * d_in - n_beta
    return out.split([d_out, d_in, d_in, n_beta], dim=-1)


def row_rates(rate: torch.Tensor, d_in: int, n_beta: int, rows: int) -> torch.Tensor:
    """Per-row learning rates from σ(b): one for all rows, or one per block (y, k, q, β)."""
    if n_beta == 1:
        return rate
    d_out = rows - 2 * d_in - n_beta
    sizes = torch.tensor([d_out, d_in, d_in, n_beta], device=rate.device)
    return rate.repeat_interleave(sizes, dim=-1)


def srwm_step(W: torch.Tensor, a: torch.Tensor, n_beta: int, rate_scale: float = 1.0
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of Eq. 2–4 from W = W_{t−1} ``[B, H, R, D]`` and the input a_t ``[B, H, D]``:
    the output y_t, the key φ(k_t), the written rows u_t = s σ(b_t)(v_t − v̄_t) and W_t."""
    y, k, q, b = split_rows(torch.einsum("bhrd,bhd->bhr", W, a), a.shape[-1], n_beta)
    pk, pq = torch.softmax(k, dim=-1), torch.softmax(q, dim=-1)
    v = torch.einsum("bhrd,bhd->bhr", W, pq)
    v_bar = torch.einsum("bhrd,bhd->bhr", W, pk)
    u = row_rates(rate_scale * torch.sigmoid(b), a.shape[-1], n_beta, W.shape[-2]) * (v - v_bar)
    return y, pk, u, W + u.unsqueeze(-1) * pk.unsqueeze(-2)


def srwm_recurrent(
    x: torch.Tensor, W0: torch.Tensor, n_beta: int = 1, input_softmax: bool = False,
    rate_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per step (φ = softmax, W = W_{t−1}, s = ``rate_scale``):

        [y_t; k_t; q_t; b_t] = W x_t                      (Eq. 2; x_t ← φ(x_t) if input_softmax)
        v_t = W φ(q_t),  v̄_t = W φ(k_t)                   (Eq. 3)
        W_t = W + s σ(b_t) (v_t − v̄_t) ⊗ φ(k_t)            (Eq. 4)
    """
    dtype = state_dtype(x.dtype)
    W = W0.to(dtype).expand(x.shape[0], *W0.shape[-3:])
    outputs = []
    for x_t in x.to(dtype).unbind(1):
        a = torch.softmax(x_t, dim=-1) if input_softmax else x_t
        y, _, _, W = srwm_step(W, a, n_beta, rate_scale)
        outputs.append(y)
    return torch.stack(outputs, dim=1).to(x.dtype), W
