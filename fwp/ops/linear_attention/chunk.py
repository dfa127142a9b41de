"""Chunkwise-parallel sum rule.

Within a chunk of C steps the outputs are causal attention without softmax,
O = Q S_prev + (Q Kᵀ ⊙ M) V with M lower-triangular (diagonal included); between chunks the
state advances by S ← S + Kᵀ V. Cost O(T·C·D + T·D²) instead of T sequential outer products.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fwp.ops._validation import start_state, state_dtype


def pad_time(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Zero-pad dim 1 (time) up to a multiple of ``chunk_size``."""
    pad = -x.shape[1] % chunk_size
    if pad == 0:
        return x
    widths = [0, 0] * (x.dim() - 2) + [0, pad]
    return F.pad(x, widths)


def to_chunks(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """[B, T, H, *] → [B, H, N, C, *] with N = ceil(T / C), zero-padded."""
    x = pad_time(x, chunk_size)
    B, T, H = x.shape[:3]
    x = x.reshape(B, T // chunk_size, chunk_size, H, *x.shape[3:])
    return x.transpose(1, 3).transpose(2, 3)


def from_chunks(x: torch.Tensor, length: int) -> torch.Tensor:
    """[B, H, N, C, *] → [B, T, H, *], cutting the padding."""
    B, H, N, C = x.shape[:4]
    x = x.transpose(2, 3).transpose(1, 3).reshape(B, N * C, H, *x.shape[4:])
    return x[:, :length]


def linear_attention_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    B, T, H, K = k.shape
    V = v.shape[-1]
    dtype = state_dtype(q.dtype)
    C = min(chunk_size, T)
    qc, kc, vc = (to_chunks(t.to(dtype), C) for t in (q, k, v))
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    # Intra-chunk part for all chunks at once.
    scores = (qc @ kc.transpose(-1, -2)).masked_fill(~causal, 0.0)
    intra = scores @ vc
    # Inter-chunk part: the state entering each chunk, one step per chunk.
    state = start_state(q, K, V, initial_state)
    inter = []
    for q_n, k_n, v_n in zip(qc.unbind(2), kc.unbind(2), vc.unbind(2)):
        inter.append(q_n @ state)
        state = state + k_n.transpose(-1, -2) @ v_n
    o = intra + torch.stack(inter, dim=2)
    return from_chunks(o, T).to(q.dtype), (state if output_final_state else None)
