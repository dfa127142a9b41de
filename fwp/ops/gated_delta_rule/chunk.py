"""Chunkwise-parallel gated delta rule: the WY form of the delta rule with decays.

Inside a chunk that starts from S_0, let G_i = Σ_{j≤i} g_j (so Γ_i = exp(G_i) = Π_{j≤i} α_j) and
write each step as S_i = α_i S_{i−1} + k_i u_iᵀ with u_i = β_i (v_i − α_i S_{i−1}ᵀ k_i). Unrolled,
S_i = Γ_i S_0 + Σ_{τ≤i} (Γ_i / Γ_τ) k_τ u_τᵀ, and the writes solve a unit lower-triangular system

    (I + A) U = diag(β) V − diag(β Γ) K S_0,    A_{iτ} = β_i (Γ_i / Γ_τ) k_iᵀ k_τ  (τ < i).

With T = (I + A)⁻¹, W = T diag(β Γ) K and U_wy = T diag(β) V (independent of S_0, so solved for
all chunks at once), U = U_wy − W S_0 and

    O = diag(Γ) Q S_0 + (Q Kᵀ ⊙ D) U,    S_C = Γ_C S_0 + (diag(Γ_C / Γ) K)ᵀ U,

with D_{iτ} = Γ_i / Γ_τ for τ ≤ i and 0 above the diagonal. Every ratio is formed as
exp(G_i − G_τ) with τ ≤ i, so it stays in (0, 1] when g ≤ 0; no division by a small Γ.
Padding steps get β = 0 and g = 0: they write nothing and decay nothing, so any T works.
"""

from __future__ import annotations

import torch

from fwp.ops._chunks import from_chunks, to_chunks
from fwp.ops._validation import start_state, state_dtype


def gated_delta_rule_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    B, T, H, K = k.shape
    V = v.shape[-1]
    dtype = state_dtype(q.dtype)
    C = min(chunk_size, T)
    qc, kc, vc = (to_chunks(t.to(dtype), C) for t in (q, k, v))
    bc = to_chunks(beta.to(dtype), C).unsqueeze(-1)  # [B, H, N, C, 1]
    G = to_chunks(g.to(dtype), C).cumsum(dim=-1)  # [B, H, N, C]
    eye = torch.eye(C, dtype=dtype, device=q.device)
    lower = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    strict = lower & ~eye.bool()

    # decay[i, τ] = exp(G_i − G_τ) on and below the diagonal; the exponent is masked to 0 above it
    # before exp, so no overflow (and no inf · 0 in the backward) for strongly decaying chunks.
    log_ratio = (G.unsqueeze(-1) - G.unsqueeze(-2)).masked_fill(~lower, 0.0)
    decay = log_ratio.exp().masked_fill(~lower, 0.0)
    gamma = G.exp().unsqueeze(-1)  # Γ_i, [B, H, N, C, 1]
    gamma_to_end = (G[..., -1:] - G).exp().unsqueeze(-1)  # Γ_C / Γ_i

    gram = (kc @ kc.transpose(-1, -2)) * decay.masked_fill(~strict, 0.0)
    system = eye + bc * gram  # I + A, unit lower-triangular
    rhs = torch.cat([bc * gamma * kc, bc * vc], dim=-1)
    solved = torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True)
    w, u_wy = solved.split([K, V], dim=-1)
    scores = (qc @ kc.transpose(-1, -2)) * decay
    q_decayed = gamma * qc
    k_to_end = gamma_to_end * kc
    chunk_decay = G[..., -1].exp()[..., None, None]  # Γ_C, [B, H, N, 1, 1]

    state = start_state(q, K, V, initial_state)
    outputs = []
    for q_n, k_n, w_n, u_n, s_n, d_n in zip(
        q_decayed.unbind(2), k_to_end.unbind(2), w.unbind(2), u_wy.unbind(2),
        scores.unbind(2), chunk_decay.unbind(2),
    ):
        writes = u_n - w_n @ state
        outputs.append(q_n @ state + s_n @ writes)
        state = d_n * state + k_n.transpose(-1, -2) @ writes
    o = torch.stack(outputs, dim=2)
    return from_chunks(o, T).to(q.dtype), (state if output_final_state else None)
