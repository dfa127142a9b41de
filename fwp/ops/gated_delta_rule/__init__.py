"""The gated delta rule: delta-rule fast weights with a decay (Yang, Kautz, Hatamizadeh 2025)."""

from __future__ import annotations

import torch

from fwp.errors import UserError
from fwp.ops._dispatch import Mode, pick_mode
from fwp.ops._validation import check_chunk_size, check_qkv, check_rank
from fwp.ops.gated_delta_rule.chunk import gated_delta_rule_chunk
from fwp.ops.gated_delta_rule.naive import gated_delta_rule_recurrent

MODES = {
    "recurrent": Mode(gated_delta_rule_recurrent),
    "chunk": Mode(gated_delta_rule_chunk, chunked=True),
}
AUTO = {"default": ["chunk"]}


def gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    mode: str = "auto",
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule (Gated DeltaNet, Yang et al., ICLR 2025), with α_t = exp(g_t):

        S_t = α_t S_{t−1} + β_t k_t (v_t − α_t S_{t−1}ᵀ k_t)ᵀ,    o_t = S_tᵀ q_t.

    Equivalently S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ: a decayed delta rule. With
    g = 0 (α = 1) it is :func:`fwp.ops.delta_rule`.

    Args:
        q, k: ``[B, T, H, K]``, already feature-mapped (L2-normalised keys keep it stable).
        v: ``[B, T, H, V]``.
        beta: ``[B, T, H]`` write strengths, usually σ(·) ∈ (0, 1).
        g: ``[B, T, H]`` log-decays, g ≤ 0 so that α ∈ (0, 1] (e.g. ``logsigmoid`` or
            ``−softplus`` of a projection).
        initial_state: ``[B, H, K, V]`` (zeros if ``None``).
        output_final_state: also return S_T.
        mode: ``"recurrent"`` (reference loop), ``"chunk"`` (WY form with decays) or ``"auto"``.
        chunk_size: steps per chunk in ``"chunk"`` mode; any T works.

    Returns:
        ``(o [B, T, H, V], S_T [B, H, K, V] or None)``. States are kept in at least float32.
    """
    B, T, H, _, _ = check_qkv(q, k, v, beta, initial_state)
    check_rank("g", g, "B, T, H")
    if g.shape != (B, T, H):
        raise UserError(f"g must be [B, T, H] = {(B, T, H)}, got {tuple(g.shape)}")
    if g.dtype != q.dtype or g.device != q.device:
        raise UserError(
            f"g is {g.dtype} on {g.device} but q is {q.dtype} on {q.device}: "
            f"cast and move g to match"
        )
    check_chunk_size(chunk_size)
    impl = pick_mode("gated_delta_rule", mode, MODES, AUTO, q)
    kwargs = {"chunk_size": chunk_size} if impl.chunked else {}
    return impl.fn(q, k, v, beta, g, initial_state, output_final_state, **kwargs)
