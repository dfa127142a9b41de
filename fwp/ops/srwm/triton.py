"""SRWM scan as Triton kernels: one program per (batch, head), W in registers across time.

Same equations and memory trick as :mod:`fwp.ops.srwm.scan` (read its docstring for the
backward): the forward stores per step only φ(k_t), φ(q_t), σ(b_t) and d_t = v_t − v̄_t, plus
W_T; the backward walks time in reverse, rebuilding W_{t−1} = W_t − (σ(b_t) ⊙ d_t) ⊗ φ(k_t) and
carrying G = ∂L/∂W_t, so neither pass ever holds more than one matrix (two in the backward) per
head. Inputs may be float32, bfloat16 or float16 (the state and all arithmetic are float32) or
float64 (all float64, so the interpreter tests can be tight).

The R × D matrix is kept as four register blocks, one per group of rows (y: D_out, k: D, q: D,
β: n_beta, padded to powers of two; padding stays zero because padded rows and columns of every
update are zero), so that k and q come out of matrix-vector products without slicing a vector.
Matrix-vector products are broadcast-and-reduce: with D ≤ 64 one step is too small for tl.dot.
"""

from __future__ import annotations

from typing import Any

import torch

from fwp.errors import UserError
from fwp.ops._triton_utils import LazyKernel, accumulator, block, require
from fwp.ops._validation import state_dtype
from fwp.ops.srwm._custom_op import register_srwm_op

tl: Any = None  # triton.language, bound by LazyKernel on the first launch
MAX_D = 64
N_BETA_BLOCK = 4  # σ(b) has one or four entries (one per block y, k, q, β): padded to 4


def _srwm_forward_kernel(
    x_ptr, w0_ptr, y_ptr, pk_ptr, pq_ptr, rate_ptr, d_ptr, wt_ptr,
    T, H, D, DO, w0_batch_stride, RATE_SCALE,
    N_BETA: tl.constexpr, INPUT_SOFTMAX: tl.constexpr,
    BD: tl.constexpr, BO: tl.constexpr, ACC: tl.constexpr,
):
    # x, y: [B, T, H, D], [B, T, H, DO]; W0, W_T: [B, H, R, D] (W0's batch stride 0 if shared);
    # saved vectors pk, pq: [B, H, T, D], rate: [B, H, T, N_BETA], d: [B, H, T, R].
    pid = tl.program_id(0).to(tl.int64)
    b = pid // H
    h = pid % H
    R = DO + 2 * D + N_BETA
    cols = tl.arange(0, BD)
    rows_y = tl.arange(0, BO)
    rows_b = tl.arange(0, 4)
    col_ok = cols < D
    y_ok = rows_y < DO
    b_ok = rows_b < N_BETA
    sq_ok = col_ok[:, None] & col_ok[None, :]

    w0 = w0_ptr + b * w0_batch_stride + h * R * D
    Wy = tl.load(w0 + rows_y[:, None] * D + cols[None, :],
                 mask=y_ok[:, None] & col_ok[None, :], other=0.0).to(ACC)
    Wk = tl.load(w0 + (DO + cols[:, None]) * D + cols[None, :], mask=sq_ok, other=0.0).to(ACC)
    Wq = tl.load(w0 + (DO + D + cols[:, None]) * D + cols[None, :], mask=sq_ok, other=0.0).to(ACC)
    Wb = tl.load(w0 + (DO + 2 * D + rows_b[:, None]) * D + cols[None, :],
                 mask=b_ok[:, None] & col_ok[None, :], other=0.0).to(ACC)

    saved = (b * H + h) * T  # first step of this (b, h) in the [B, H, T, ·] buffers
    for t in range(T):
        step = (b * T + t) * H + h  # (b, t, h) in the [B, T, H, ·] tensors
        a = tl.load(x_ptr + step * D + cols, mask=col_ok, other=0.0).to(ACC)
        if INPUT_SOFTMAX:
            a = tl.where(col_ok, a, float("-inf"))
            a = tl.exp(a - tl.max(a, 0))
            a = a / tl.sum(a, 0)
        # Eq. 2: [y; k; q; b] = W x
        y = tl.sum(Wy * a[None, :], 1)
        k = tl.where(col_ok, tl.sum(Wk * a[None, :], 1), float("-inf"))
        q = tl.where(col_ok, tl.sum(Wq * a[None, :], 1), float("-inf"))
        rate = RATE_SCALE * tl.sigmoid(tl.sum(Wb * a[None, :], 1))
        pk = tl.exp(k - tl.max(k, 0))
        pk = pk / tl.sum(pk, 0)
        pq = tl.exp(q - tl.max(q, 0))
        pq = pq / tl.sum(pq, 0)
        # Eq. 3: d = v − v̄ = W (φ(q) − φ(k)), block by block
        diff = pq - pk
        dy = tl.sum(Wy * diff[None, :], 1)
        dk = tl.sum(Wk * diff[None, :], 1)
        dq = tl.sum(Wq * diff[None, :], 1)
        db = tl.sum(Wb * diff[None, :], 1)
        r_y = tl.sum(tl.where(rows_b == 0, rate, 0.0), 0)
        if N_BETA == 4:
            r_k = tl.sum(tl.where(rows_b == 1, rate, 0.0), 0)
            r_q = tl.sum(tl.where(rows_b == 2, rate, 0.0), 0)
            r_b = tl.sum(tl.where(rows_b == 3, rate, 0.0), 0)
        else:
            r_k = r_y
            r_q = r_y
            r_b = r_y
        # Eq. 4: W += σ(b) (v − v̄) ⊗ φ(k)
        Wy += (r_y * dy)[:, None] * pk[None, :]
        Wk += (r_k * dk)[:, None] * pk[None, :]
        Wq += (r_q * dq)[:, None] * pk[None, :]
        Wb += (r_b * db)[:, None] * pk[None, :]

        tl.store(y_ptr + step * DO + rows_y, y.to(y_ptr.dtype.element_ty), mask=y_ok)
        tl.store(pk_ptr + (saved + t) * D + cols, pk, mask=col_ok)
        tl.store(pq_ptr + (saved + t) * D + cols, pq, mask=col_ok)
        tl.store(rate_ptr + (saved + t) * N_BETA + rows_b, rate, mask=b_ok)
        d_row = d_ptr + (saved + t) * R
        tl.store(d_row + rows_y, dy, mask=y_ok)
        tl.store(d_row + DO + cols, dk, mask=col_ok)
        tl.store(d_row + DO + D + cols, dq, mask=col_ok)
        tl.store(d_row + DO + 2 * D + rows_b, db, mask=b_ok)

    wt = wt_ptr + (b * H + h) * R * D
    tl.store(wt + rows_y[:, None] * D + cols[None, :], Wy, mask=y_ok[:, None] & col_ok[None, :])
    tl.store(wt + (DO + cols[:, None]) * D + cols[None, :], Wk, mask=sq_ok)
    tl.store(wt + (DO + D + cols[:, None]) * D + cols[None, :], Wq, mask=sq_ok)
    tl.store(wt + (DO + 2 * D + rows_b[:, None]) * D + cols[None, :], Wb,
             mask=b_ok[:, None] & col_ok[None, :])


def _srwm_backward_kernel(
    x_ptr, gy_ptr, pk_ptr, pq_ptr, rate_ptr, d_ptr, wt_ptr, gwt_ptr, gx_ptr, gw0_ptr,
    T, H, D, DO, RATE_SCALE,
    N_BETA: tl.constexpr, INPUT_SOFTMAX: tl.constexpr,
    BD: tl.constexpr, BO: tl.constexpr, ACC: tl.constexpr,
):
    # Layouts as in the forward; gy: [B, T, H, DO], G_T and ∂W0 (per sequence): [B, H, R, D].
    pid = tl.program_id(0).to(tl.int64)
    b = pid // H
    h = pid % H
    R = DO + 2 * D + N_BETA
    cols = tl.arange(0, BD)
    rows_y = tl.arange(0, BO)
    rows_b = tl.arange(0, 4)
    col_ok = cols < D
    y_ok = rows_y < DO
    b_ok = rows_b < N_BETA
    sq_ok = col_ok[:, None] & col_ok[None, :]
    yd_ok = y_ok[:, None] & col_ok[None, :]
    bd_ok = b_ok[:, None] & col_ok[None, :]
    y_at = rows_y[:, None] * D + cols[None, :]
    k_at = (DO + cols[:, None]) * D + cols[None, :]
    q_at = (DO + D + cols[:, None]) * D + cols[None, :]
    b_at = (DO + 2 * D + rows_b[:, None]) * D + cols[None, :]

    matrix = (b * H + h) * R * D
    Wy = tl.load(wt_ptr + matrix + y_at, mask=yd_ok, other=0.0).to(ACC)
    Wk = tl.load(wt_ptr + matrix + k_at, mask=sq_ok, other=0.0).to(ACC)
    Wq = tl.load(wt_ptr + matrix + q_at, mask=sq_ok, other=0.0).to(ACC)
    Wb = tl.load(wt_ptr + matrix + b_at, mask=bd_ok, other=0.0).to(ACC)
    Gy = tl.load(gwt_ptr + matrix + y_at, mask=yd_ok, other=0.0).to(ACC)
    Gk = tl.load(gwt_ptr + matrix + k_at, mask=sq_ok, other=0.0).to(ACC)
    Gq = tl.load(gwt_ptr + matrix + q_at, mask=sq_ok, other=0.0).to(ACC)
    Gb = tl.load(gwt_ptr + matrix + b_at, mask=bd_ok, other=0.0).to(ACC)

    saved = (b * H + h) * T
    for i in range(T):
        t = T - 1 - i
        step = (b * T + t) * H + h
        a = tl.load(x_ptr + step * D + cols, mask=col_ok, other=0.0).to(ACC)
        if INPUT_SOFTMAX:
            a = tl.where(col_ok, a, float("-inf"))
            a = tl.exp(a - tl.max(a, 0))
            a = a / tl.sum(a, 0)
        gy = tl.load(gy_ptr + step * DO + rows_y, mask=y_ok, other=0.0).to(ACC)
        pk = tl.load(pk_ptr + (saved + t) * D + cols, mask=col_ok, other=0.0)
        pq = tl.load(pq_ptr + (saved + t) * D + cols, mask=col_ok, other=0.0)
        rate = tl.load(rate_ptr + (saved + t) * N_BETA + rows_b, mask=b_ok, other=0.0)
        d_row = d_ptr + (saved + t) * R
        dy = tl.load(d_row + rows_y, mask=y_ok, other=0.0)
        dk = tl.load(d_row + DO + cols, mask=col_ok, other=0.0)
        dq = tl.load(d_row + DO + D + cols, mask=col_ok, other=0.0)
        db = tl.load(d_row + DO + 2 * D + rows_b, mask=b_ok, other=0.0)
        r_y = tl.sum(tl.where(rows_b == 0, rate, 0.0), 0)
        if N_BETA == 4:
            r_k = tl.sum(tl.where(rows_b == 1, rate, 0.0), 0)
            r_q = tl.sum(tl.where(rows_b == 2, rate, 0.0), 0)
            r_b = tl.sum(tl.where(rows_b == 3, rate, 0.0), 0)
        else:
            r_k = r_y
            r_q = r_y
            r_b = r_y
        uy = r_y * dy
        uk = r_k * dk
        uq = r_q * dq
        ub = r_b * db
        # W_{t−1} = W_t − u ⊗ φ(k)
        Wy -= uy[:, None] * pk[None, :]
        Wk -= uk[:, None] * pk[None, :]
        Wq -= uq[:, None] * pk[None, :]
        Wb -= ub[:, None] * pk[None, :]

        # ∂u = G φ(k), ∂φ(k) = Gᵀ u, ∂σ = Σ_block ∂u ⊙ d, ∂d = ∂u ⊙ σ
        gu_y = tl.sum(Gy * pk[None, :], 1)
        gu_k = tl.sum(Gk * pk[None, :], 1)
        gu_q = tl.sum(Gq * pk[None, :], 1)
        gu_b = tl.sum(Gb * pk[None, :], 1)
        g_pk = (tl.sum(Gy * uy[:, None], 0) + tl.sum(Gk * uk[:, None], 0)
                + tl.sum(Gq * uq[:, None], 0) + tl.sum(Gb * ub[:, None], 0))
        s_y = tl.sum(gu_y * dy, 0)
        s_k = tl.sum(gu_k * dk, 0)
        s_q = tl.sum(gu_q * dq, 0)
        s_b = tl.sum(gu_b * db, 0)
        if N_BETA == 4:
            g_rate = tl.where(rows_b == 0, s_y,
                              tl.where(rows_b == 1, s_k, tl.where(rows_b == 2, s_q, s_b)))
        else:
            g_rate = tl.where(rows_b == 0, s_y + s_k + s_q + s_b, 0.0)
        g_b = g_rate * rate * (1.0 - rate / RATE_SCALE)  # rate = s σ(b)
        gd_y = gu_y * r_y
        gd_k = gu_k * r_k
        gd_q = gu_q * r_q
        gd_b = gu_b * r_b
        # d = W (φ(q) − φ(k)): Wᵀ ∂d goes to φ(q) and, negated, to φ(k)
        wt_gd = (tl.sum(Wy * gd_y[:, None], 0) + tl.sum(Wk * gd_k[:, None], 0)
                 + tl.sum(Wq * gd_q[:, None], 0) + tl.sum(Wb * gd_b[:, None], 0))
        g_pk = g_pk - wt_gd
        g_k = pk * (g_pk - tl.sum(g_pk * pk, 0))
        g_q = pq * (wt_gd - tl.sum(wt_gd * pq, 0))
        # [y; k; q; b] = W a
        g_a = (tl.sum(Wy * gy[:, None], 0) + tl.sum(Wk * g_k[:, None], 0)
               + tl.sum(Wq * g_q[:, None], 0) + tl.sum(Wb * g_b[:, None], 0))
        if INPUT_SOFTMAX:
            g_a = a * (g_a - tl.sum(g_a * a, 0))
        tl.store(gx_ptr + step * D + cols, g_a.to(gx_ptr.dtype.element_ty), mask=col_ok)

        # ∂L/∂W_{t−1} = G + ∂d ⊗ (φ(q) − φ(k)) + ∂[y; k; q; b] ⊗ a
        diff = pq - pk
        Gy += gd_y[:, None] * diff[None, :] + gy[:, None] * a[None, :]
        Gk += gd_k[:, None] * diff[None, :] + g_k[:, None] * a[None, :]
        Gq += gd_q[:, None] * diff[None, :] + g_q[:, None] * a[None, :]
        Gb += gd_b[:, None] * diff[None, :] + g_b[:, None] * a[None, :]

    tl.store(gw0_ptr + matrix + y_at, Gy, mask=yd_ok)
    tl.store(gw0_ptr + matrix + k_at, Gk, mask=sq_ok)
    tl.store(gw0_ptr + matrix + q_at, Gq, mask=sq_ok)
    tl.store(gw0_ptr + matrix + b_at, Gb, mask=bd_ok)


_forward_kernel = LazyKernel(_srwm_forward_kernel)
_backward_kernel = LazyKernel(_srwm_backward_kernel)


def _num_warps(D: int, d_out: int) -> int:
    """Few warps, since every step ends in reductions and cross-warp reductions cost a barrier,
    but enough registers for the blocks of W (and G in the backward): chosen so that ptxas
    reports no spills for sm_90 at D = D_out ∈ {16, 32, 64}; not tuned on a GPU."""
    width = max(D, d_out)
    return 1 if width <= 16 else 4 if width <= 32 else 8


Tensor = torch.Tensor


@torch.library.custom_op("fwp::srwm_triton", mutates_args=())
def srwm_triton_op(
    x: Tensor, W0: Tensor, n_beta: int, input_softmax: bool, rate_scale: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(y, W_T, φ(k), φ(q), σ(b), d)``, the last five in the state dtype. A ``torch.library``
    custom operator with a fake implementation and its autograd, so ``torch.compile`` traces
    through it."""
    B, T, H, D = x.shape
    R = W0.shape[-2]
    d_out = R - 2 * D - n_beta
    dtype = state_dtype(x.dtype)
    xs = x.contiguous()
    W0s = W0.to(dtype).contiguous()
    vectors = dict(device=x.device, dtype=dtype)
    y = x.new_empty(B, T, H, d_out)
    pk, pq = torch.empty(B, H, T, D, **vectors), torch.empty(B, H, T, D, **vectors)
    rate = torch.empty(B, H, T, n_beta, **vectors)
    d = torch.empty(B, H, T, R, **vectors)
    W_T = torch.empty(B, H, R, D, **vectors)
    _forward_kernel[(B * H,)](
        xs, W0s, y, pk, pq, rate, d, W_T,
        T, H, D, d_out, H * R * D if W0.dim() == 4 else 0, rate_scale,
        N_BETA=n_beta, INPUT_SOFTMAX=input_softmax,
        BD=block(D), BO=block(d_out), ACC=accumulator(dtype),
        num_warps=_num_warps(D, d_out),
    )
    return y, W_T, pk, pq, rate, d


@torch.library.custom_op("fwp::srwm_triton_backward", mutates_args=())
def _backward(
    x: Tensor, pk: Tensor, pq: Tensor, rate: Tensor, d: Tensor, W_T: Tensor, grad_y: Tensor,
    grad_WT: Tensor, n_beta: int, input_softmax: bool, rate_scale: float,
) -> tuple[Tensor, Tensor]:
    """``(∂x, ∂W0 per sequence [B, H, R, D] in the state dtype)``."""
    B, T, H, D = x.shape
    d_out = W_T.shape[-2] - 2 * D - n_beta
    x = x.contiguous()
    grad_x = torch.empty_like(x)
    grad_W0 = torch.empty_like(W_T)
    _backward_kernel[(B * H,)](
        x, grad_y.contiguous(), pk, pq, rate, d, W_T, grad_WT.to(W_T.dtype).contiguous(),
        grad_x, grad_W0, T, H, D, d_out, rate_scale,
        N_BETA=n_beta, INPUT_SOFTMAX=input_softmax,
        BD=block(D), BO=block(d_out), ACC=accumulator(W_T.dtype),
        num_warps=_num_warps(D, d_out),
    )
    return grad_x, grad_W0


@_backward.register_fake
def _(x, pk, pq, rate, d, W_T, grad_y, grad_WT, n_beta, input_softmax, rate_scale):  # noqa: ANN001, ANN202
    return torch.empty_like(x), torch.empty_like(W_T)


register_srwm_op(srwm_triton_op, _backward)


def srwm_triton(
    x: torch.Tensor, W0: torch.Tensor, n_beta: int = 1, input_softmax: bool = False,
    rate_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The SRWM scan (seed paper Eq. 2–4) with Triton kernels; see :func:`fwp.ops.srwm.srwm`.

    Args:
        x: ``[B, T, H, D]``, D ≤ 64, float32 / bfloat16 / float16 (float32 state) or float64.
        W0: ``[H, R, D]`` shared or ``[B, H, R, D]`` per sequence, rows y, k, q, β.

    Returns:
        ``(y [B, T, H, D_out], W_T [B, H, R, D])``.
    """
    require("srwm mode 'triton'", x.device)
    if x.shape[-1] > MAX_D:
        raise UserError(
            f"srwm mode 'triton' keeps W in registers and supports D ≤ {MAX_D}, got "
            f"D = {x.shape[-1]}: use mode='scan'"
        )
    y, W_T, *_ = srwm_triton_op(x, W0, n_beta, input_softmax, float(rate_scale))
    return y, W_T
