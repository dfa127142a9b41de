"""Chunkwise-parallel Mesa layer (von Oswald et al. 2025, §3.2): the CG solves of every step of
the sequence run at once.

Within a chunk starting after step s (states H_s, G_s) the matrix of step t is never formed:

    (H_t + Λ) p = Γ_t H_s p + Σ_{s<τ≤t} β_τ (Γ_t / Γ_τ) k_τ (k_τ · p) + λ ⊙ p,

with Γ_t the product of the decays γ from the chunk's start to t. For all positions of a chunk at
once this is ``Γ ⊙ (P H_s) + ((P Kᵀ) ⊙ D) K + λ ⊙ P`` with D_tτ = β_τ Γ_t / Γ_τ for τ ≤ t (0
above the diagonal); the read G_tᵀ x_t is the same with V in place of the last K. Only the chunk
states are kept: O(T/C · K²) numbers instead of one K × K matrix per step.
"""

from __future__ import annotations

import torch

from fwp.ops._chunks import from_chunks, to_chunks
from fwp.ops._validation import state_dtype
from fwp.ops.mesa.naive import _start, cg_solve


def _chunk_matvec(p: torch.Tensor, gamma: torch.Tensor, Hs: torch.Tensor, kc: torch.Tensor,
                  D: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """(H_t + Λ) p_t for every position t of every chunk (see the module docstring)."""
    return gamma * (p @ Hs) + ((p @ kc.transpose(-1, -2)) * D) @ kc + lam * p


def mesa_chunk(q, k, v, beta, g, lamb, initial_state=None, output_final_state=False,  # noqa: ANN001
               cg_steps=30, chunk_size=64):
    B, T, Hd, K = q.shape
    dtype = state_dtype(q.dtype)
    C = min(chunk_size, T)
    qc, kc, vc = (to_chunks(t.to(dtype), C) for t in (q, k, v))  # [B, H, N, C, ·]
    bc, gc = (to_chunks(t.to(dtype), C) for t in (beta, g))  # [B, H, N, C]; padding: β = g = 0
    log_gamma = gc.cumsum(-1)  # log Γ_t within the chunk
    lower = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    diff = (log_gamma.unsqueeze(-1) - log_gamma.unsqueeze(-2)).masked_fill(~lower, -torch.inf)
    D = diff.exp() * bc.unsqueeze(-2)  # [B, H, N, C, C]
    gamma = log_gamma.exp().unsqueeze(-1)  # [B, H, N, C, 1]
    to_end = (log_gamma[..., -1:] - log_gamma).exp() * bc  # β_τ Γ_C / Γ_τ

    H, G = _start(q, v, initial_state)
    starts_h, starts_g = [], []
    for n in range(qc.shape[2]):  # the chunk states, one small loop over chunks
        starts_h.append(H)
        starts_g.append(G)
        weighted = (to_end[:, :, n].unsqueeze(-1) * kc[:, :, n]).transpose(-1, -2)
        decay = log_gamma[:, :, n, -1].exp()[..., None, None]
        H = decay * H + weighted @ kc[:, :, n]
        G = decay * G + weighted @ vc[:, :, n]
    Hs, Gs = torch.stack(starts_h, dim=2), torch.stack(starts_g, dim=2)  # [B, H, N, K, ·]
    lam = lamb.to(dtype)[None, :, None, None, :]

    x = cg_solve(_chunk_matvec, qc, cg_steps, gamma, Hs, kc, D, lam)
    o = gamma * (x @ Gs) + ((x @ kc.transpose(-1, -2)) * D) @ vc
    return from_chunks(o, T).to(q.dtype), ((H, G) if output_final_state else None)
