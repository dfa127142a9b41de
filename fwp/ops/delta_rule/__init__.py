"""The delta rule: DeltaNet as a fast weight programmer (Schlag, Irie, Schmidhuber 2021)."""

from __future__ import annotations

import torch

from fwp.ops._dispatch import Mode, on_cpu, on_triton, pick_mode
from fwp.ops._validation import check_chunk_size, check_qkv
from fwp.ops.delta_rule.chunk import delta_rule_chunk
from fwp.ops.delta_rule.cpu import delta_rule_fused_cpu
from fwp.ops.delta_rule.naive import delta_rule_recurrent
from fwp.ops.delta_rule.triton import delta_rule_chunk_triton, delta_rule_fused_recurrent_triton

MODES = {
    "recurrent": Mode(delta_rule_recurrent),
    "chunk": Mode(delta_rule_chunk, chunked=True),
    "fused_cpu": Mode(delta_rule_fused_cpu, on_cpu),
    "triton": Mode(delta_rule_fused_recurrent_triton, on_triton),
    "triton_chunk": Mode(delta_rule_chunk_triton, on_triton, chunked=True),
}
AUTO = {"cpu": ["fused_cpu", "chunk"], "cuda": ["triton", "chunk"], "default": ["chunk"]}


def delta_rule(
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
    """Delta-rule fast weights: S_t = S_{t−1} + β_t k_t (v_t − S_{t−1}ᵀ k_t)ᵀ, o_t = S_tᵀ q_t.

    The read comes after the write, as in DeltaNet.

    Args:
        q, k: ``[B, T, H, K]``, already feature-mapped (L2- or sum-normalised keys keep the
            update stable).
        v: ``[B, T, H, V]``.
        beta: ``[B, T, H]`` write strengths, usually σ(·) ∈ (0, 1).
        initial_state: ``[B, H, K, V]`` (zeros if ``None``).
        output_final_state: also return S_T.
        mode: ``"recurrent"`` (reference loop), ``"chunk"`` (WY form), ``"fused_cpu"`` (C++
            scan with a memory-light backward), ``"triton"`` (fused recurrent GPU kernel),
            ``"triton_chunk"`` (chunked GPU forward) or ``"auto"``: the fastest that can run
            (CPU: fused_cpu, else chunk; CUDA: triton, else chunk).
        chunk_size: steps per chunk in ``"chunk"`` mode; any T works.

    Returns:
        ``(o [B, T, H, V], S_T [B, H, K, V] or None)``. States are kept in at least float32.
    """
    check_qkv(q, k, v, beta, initial_state)
    check_chunk_size(chunk_size)
    impl = pick_mode("delta_rule", mode, MODES, AUTO, q)
    kwargs = {"chunk_size": chunk_size} if impl.chunked else {}
    return impl.fn(q, k, v, beta, initial_state, output_final_state, **kwargs)
