"""The modern self-referential weight matrix (Irie et al., ICML 2022; seed paper Eq. 2–4)."""

from __future__ import annotations

import torch

from fwp.errors import UserError
from fwp.ops._dispatch import Mode, on_cpu, on_triton, pick_mode
from fwp.ops._validation import check_srwm
from fwp.ops.srwm.cpu import srwm_fused_cpu
from fwp.ops.srwm.naive import srwm_recurrent
from fwp.ops.srwm.scan import srwm_scan
from fwp.ops.srwm.triton import srwm_triton

MODES = {
    "recurrent": Mode(srwm_recurrent),
    "scan": Mode(srwm_scan),
    "fused_cpu": Mode(srwm_fused_cpu, on_cpu),
    "triton": Mode(srwm_triton, on_triton),
}
AUTO = {"cpu": ["fused_cpu", "scan"], "cuda": ["triton", "scan"], "default": ["scan"]}


def srwm_rows(d_out: int, d_in: int, n_beta: int = 1) -> int:
    """Rows R of an SRWM head: y (d_out), k (d_in), q (d_in), β (n_beta)."""
    return d_out + 2 * d_in + n_beta


def srwm(
    x: torch.Tensor,
    W0: torch.Tensor,
    *,
    n_beta: int = 1,
    input_softmax: bool = False,
    d_out: int | None = None,
    rate_scale: float = 1.0,
    mode: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-referential weight matrix, one matrix per head. Per step, with W = W_{t−1}:

        [y_t; k_t; q_t; b_t] = W x_t                      (Eq. 2)
        v_t = W φ(q_t),  v̄_t = W φ(k_t)                   (Eq. 3)
        W_t = W + s σ(b_t) (v_t − v̄_t) ⊗ φ(k_t)            (Eq. 4; s = ``rate_scale``)

    φ is the softmax. With ``n_beta=4`` each block of rows (y, k, q, β) has its own rate
    σ(b_{t,i}), as in the public code; with ``n_beta=1`` one rate serves all rows.

    Args:
        x: ``[B, T, H, D]`` inputs (softmaxed first when ``input_softmax``).
        W0: ``[H, R, D]`` (shared by the batch) or ``[B, H, R, D]`` (a per-sequence state, to
            continue a sequence), with R = D_out + 2·D + n_beta, rows in the order y, k, q, β.
        d_out: D_out, the width of y (default: D). W0 must have exactly R rows for it, so a
            W0 built for another width or another ``n_beta`` is refused, not misread.
        rate_scale: s. 1 as in the papers; 2 gives rates in (0, 2), so that the update
            W_t = W (I + s σ(b) (φ(q) − φ(k)) φ(k)ᵀ) can have a negative eigenvalue
            1 + s σ(b) φ(k)ᵀ(φ(q) − φ(k)) (with s = 1 it stays above 1 − σ(b) > 0; the
            negative eigenvalues of Grazzi et al., ICLR 2025, carried over to the SRWM).
        mode: ``"recurrent"`` (reference loop through autograd), ``"scan"`` (PyTorch loop
            with a memory-light backward that rebuilds W_{t−1} from W_t in reverse),
            ``"fused_cpu"`` (the same in C++), ``"triton"`` (GPU kernel, D ≤ 64) or ``"auto"``:
            the fastest that can run (CPU: fused_cpu, else scan; CUDA: triton, else scan).

    Returns:
        ``(y [B, T, H, D_out], W_T [B, H, R, D])``; y has x's dtype, W_T at least float32.
    """
    check_srwm(x, W0, n_beta, d_out)
    if not (isinstance(rate_scale, (int, float)) and 0 < rate_scale <= 2):
        raise UserError(f"rate_scale must be in (0, 2], got {rate_scale!r}")
    return pick_mode("srwm", mode, MODES, AUTO, x).fn(x, W0, n_beta, input_softmax, rate_scale)
