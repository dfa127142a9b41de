"""Chunkwise-parallel sum rule.

Within a chunk of C steps the outputs are causal attention without softmax,
O = Q S_prev + (Q Kᵀ ⊙ M) V with M lower-triangular (diagonal included); between chunks the
state advances by S ← S + Kᵀ V. Cost O(T·C·D + T·D²) instead of T sequential outer products.
"""

from __future__ import annotations

import torch

from fwp.ops._chunks import from_chunks, to_chunks
from fwp.ops._validation import start_state, state_dtype


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
