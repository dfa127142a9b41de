"""Reference loop for the gated delta rule (Yang, Kautz, Hatamizadeh, ICLR 2025)."""

from __future__ import annotations

import torch

from fwp.ops._validation import start_state, state_dtype


def gated_delta_rule_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """α_t = exp(g_t); S_t = α_t S_{t−1} + β_t k_t (v_t − α_t S_{t−1}ᵀ k_t)ᵀ; o_t = S_tᵀ q_t."""
    B, T, H, K = k.shape
    V = v.shape[-1]
    dtype = state_dtype(q.dtype)
    state = start_state(q, K, V, initial_state)
    steps = zip(*(t.to(dtype).unbind(1) for t in (q, k, v, beta, g)))
    outputs = []
    for q_t, k_t, v_t, beta_t, g_t in steps:
        state = g_t.exp()[..., None, None] * state
        v_old = torch.einsum("bhk,bhkv->bhv", k_t, state)
        update = beta_t.unsqueeze(-1) * (v_t - v_old)
        state = state + k_t.unsqueeze(-1) * update.unsqueeze(-2)
        outputs.append(torch.einsum("bhk,bhkv->bhv", q_t, state))
    o = torch.stack(outputs, dim=1).to(q.dtype)
    return o, (state if output_final_state else None)
