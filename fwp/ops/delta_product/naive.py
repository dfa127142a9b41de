"""Reference loop for DeltaProduct (Siems et al. 2025): n_h delta micro-steps per token."""

from __future__ import annotations

import torch

from fwp.ops._validation import start_state, state_dtype


def delta_product_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """For j = 1..n_h: S ← S + β_{t,j} k_{t,j} (v_{t,j} − Sᵀ k_{t,j})ᵀ; then o_t = S_tᵀ q_t."""
    B, T, H, n_h, K = k.shape
    V = v.shape[-1]
    dtype = state_dtype(q.dtype)
    state = start_state(q, K, V, initial_state)
    steps = zip(*(t.to(dtype).unbind(1) for t in (q, k, v, beta)))
    outputs = []
    for q_t, k_t, v_t, beta_t in steps:
        for k_j, v_j, beta_j in zip(k_t.unbind(2), v_t.unbind(2), beta_t.unbind(2)):
            v_old = torch.einsum("bhk,bhkv->bhv", k_j, state)
            update = beta_j.unsqueeze(-1) * (v_j - v_old)
            state = state + k_j.unsqueeze(-1) * update.unsqueeze(-2)
        outputs.append(torch.einsum("bhk,bhkv->bhv", q_t, state))
    o = torch.stack(outputs, dim=1).to(q.dtype)
    return o, (state if output_final_state else None)
