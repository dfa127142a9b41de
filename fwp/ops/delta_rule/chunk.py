"""Chunkwise-parallel delta rule in the WY form (Yang et al., NeurIPS 2024).

Unrolling S_t = S_0 + Σ_{τ≤t} k_τ u_τᵀ inside a chunk, the writes u solve the unit
lower-triangular system (I + A) U = diag(β) (V − K S_0) with A = tril(diag(β) K Kᵀ, −1).
Writing T = (I + A)⁻¹ diag(β), W = T K and U_wy = T V (independent of the state, so computed for
all chunks at once), the writes are U = U_wy − W S_0 and

    O = Q S_0 + (Q Kᵀ ⊙ M) U,     S_C = S_0 + Kᵀ U,

with M lower-triangular including the diagonal (the read comes after the write).
Padding steps get β = 0, so they write nothing: any T works.
"""

from __future__ import annotations

import torch

from fwp.ops._chunks import from_chunks, to_chunks
from fwp.ops._validation import start_state, state_dtype


def delta_rule_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    B, T, H, K = k.shape
    V = v.shape[-1]
    dtype = state_dtype(q.dtype)
    C = min(chunk_size, T)
    qc, kc, vc = (to_chunks(t.to(dtype), C) for t in (q, k, v))
    bc = to_chunks(beta.to(dtype), C)  # [B, H, N, C]
    eye = torch.eye(C, dtype=dtype, device=q.device)
    strict = torch.ones(C, C, dtype=torch.bool, device=q.device).tril(-1)
    lower = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()

    gram = (kc @ kc.transpose(-1, -2)).masked_fill(~strict, 0.0)
    system = eye + bc.unsqueeze(-1) * gram  # I + A, unit lower-triangular
    rhs = torch.cat([bc.unsqueeze(-1) * kc, bc.unsqueeze(-1) * vc], dim=-1)
    solved = torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True)
    w, u_wy = solved.split([K, V], dim=-1)
    scores = (qc @ kc.transpose(-1, -2)).masked_fill(~lower, 0.0)

    state = start_state(q, K, V, initial_state)
    outputs = []
    for q_n, k_n, w_n, u_n, s_n in zip(
        qc.unbind(2), kc.unbind(2), w.unbind(2), u_wy.unbind(2), scores.unbind(2)
    ):
        writes = u_n - w_n @ state
        outputs.append(q_n @ state + s_n @ writes)
        state = state + k_n.transpose(-1, -2) @ writes
    o = torch.stack(outputs, dim=2)
    return from_chunks(o, T).to(q.dtype), (state if output_final_state else None)
