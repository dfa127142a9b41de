"""The sum rule: the linear transformer as a fast weight programmer (Schmidhuber 1991;
Katharopoulos et al. 2020; Schlag, Irie, Schmidhuber 2021)."""

from __future__ import annotations

import torch

from fwp.ops._dispatch import Mode, pick_mode
from fwp.ops._validation import check_chunk_size, check_qkv
from fwp.ops.linear_attention.chunk import linear_attention_chunk
from fwp.ops.linear_attention.naive import linear_attention_recurrent

MODES = {
    "recurrent": Mode(linear_attention_recurrent),
    "chunk": Mode(linear_attention_chunk, chunked=True),
}
AUTO = {"default": ["chunk"]}


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    mode: str = "auto",
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sum-rule fast weights: S_t = S_{t−1} + k_t v_tᵀ, o_t = S_tᵀ q_t.

    Args:
        q, k: ``[B, T, H, K]``, already feature-mapped (see :mod:`fwp.ops.feature_maps`).
        v: ``[B, T, H, V]``.
        initial_state: ``[B, H, K, V]`` fast weights before step 1 (zeros if ``None``).
        output_final_state: also return S_T.
        mode: ``"recurrent"`` (reference loop), ``"chunk"`` (chunkwise-parallel) or ``"auto"``.
        chunk_size: steps per chunk in ``"chunk"`` mode; any T works.

    Returns:
        ``(o [B, T, H, V], S_T [B, H, K, V] or None)``. States are kept in at least float32.
    """
    check_qkv(q, k, v, None, initial_state)
    check_chunk_size(chunk_size)
    impl = pick_mode("linear_attention", mode, MODES, AUTO, q)
    kwargs = {"chunk_size": chunk_size} if impl.chunked else {}
    return impl.fn(q, k, v, initial_state, output_final_state, **kwargs)
