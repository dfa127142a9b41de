"""DeltaProduct: n_h delta-rule micro-steps (Householder factors) per token (Siems et al. 2025)."""

from __future__ import annotations

import torch

from fwp.errors import UserError
from fwp.ops._dispatch import Mode, pick_mode
from fwp.ops._validation import check_chunk_size, check_rank, check_same_dtype_device
from fwp.ops.delta_product.chunk import delta_product_chunk
from fwp.ops.delta_product.naive import delta_product_recurrent

MODES = {
    "recurrent": Mode(delta_product_recurrent),
    "chunk": Mode(delta_product_chunk, chunked=True),
}
AUTO = {"default": ["chunk"]}


def check_delta_product_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None,
) -> None:
    check_rank("q", q, "B, T, H, K")
    check_rank("k", k, "B, T, H, n_h, K")
    check_rank("v", v, "B, T, H, n_h, V")
    check_rank("beta", beta, "B, T, H, n_h")
    B, T, H, n_h, K = k.shape
    if q.shape != (B, T, H, K):
        raise UserError(
            f"q must be [B, T, H, K] = {(B, T, H, K)} to match k {tuple(k.shape)} "
            f"(one query per token, n_h keys), got {tuple(q.shape)}"
        )
    if v.shape[:4] != (B, T, H, n_h):
        raise UserError(
            f"v must be [B, T, H, n_h, V] with the B, T, H, n_h of k {(B, T, H, n_h)}, "
            f"got {tuple(v.shape)}"
        )
    if beta.shape != (B, T, H, n_h):
        raise UserError(f"beta must be [B, T, H, n_h] = {(B, T, H, n_h)}, got {tuple(beta.shape)}")
    if T == 0:
        raise UserError("the sequence is empty (T = 0): pass at least one time step")
    if n_h == 0:
        raise UserError("k has n_h = 0 micro-steps: pass at least one key per token")
    if initial_state is not None:
        check_rank("initial_state", initial_state, "B, H, K, V")
        expected = (B, H, K, v.shape[-1])
        if initial_state.shape != expected:
            raise UserError(
                f"initial_state must be [B, H, K, V] = {expected}, got {tuple(initial_state.shape)}"
            )
        if initial_state.device != q.device:
            raise UserError(
                f"initial_state is on {initial_state.device} but q is on {q.device}: move it"
            )
    check_same_dtype_device(q=q, k=k, v=v, beta=beta)


def delta_product(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    mode: str = "auto",
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """DeltaProduct (Siems et al. 2025): n_h delta-rule micro-steps per token,

        H_{t,0} = S_{t−1};  H_{t,j} = H_{t,j−1} + β_{t,j} k_{t,j} (v_{t,j} − H_{t,j−1}ᵀ k_{t,j})ᵀ;
        S_t = H_{t,n_h},    o_t = S_tᵀ q_t.

    The state transition is a product of n_h generalised Householder matrices
    Π_j (I − β_{t,j} k_{t,j} k_{t,j}ᵀ), rank n_h instead of the delta rule's rank 1. With
    n_h = 1 it is :func:`fwp.ops.delta_rule`.

    Args:
        q: ``[B, T, H, K]``, one query per token, read after the n_h writes.
        k: ``[B, T, H, n_h, K]`` (L2-normalised keys and β ∈ (0, 2) keep it stable).
        v: ``[B, T, H, n_h, V]``.
        beta: ``[B, T, H, n_h]``.
        initial_state: ``[B, H, K, V]`` (zeros if ``None``).
        output_final_state: also return S_T.
        mode: ``"recurrent"`` (reference loop), ``"chunk"`` (one chunked delta rule over the
            T·n_h micro-steps) or ``"auto"``.
        chunk_size: micro-steps per chunk in ``"chunk"`` mode; any T works.

    Returns:
        ``(o [B, T, H, V], S_T [B, H, K, V] or None)``. States are kept in at least float32.
    """
    check_delta_product_inputs(q, k, v, beta, initial_state)
    check_chunk_size(chunk_size)
    impl = pick_mode("delta_product", mode, MODES, AUTO, q)
    kwargs = {"chunk_size": chunk_size} if impl.chunked else {}
    return impl.fn(q, k, v, beta, initial_state, output_final_state, **kwargs)
