"""Reference loop for the sum rule: one outer-product write per step."""

from __future__ import annotations

import torch

from fwp.ops._validation import start_state, state_dtype


def linear_attention_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """S_t = S_{t−1} + k_t v_tᵀ, o_t = S_tᵀ q_t, step by step. Shapes as in ``linear_attention``."""
    B, T, H, K = k.shape
    V = v.shape[-1]
    dtype = state_dtype(q.dtype)
    state = start_state(q, K, V, initial_state)
    outputs = []
    for q_t, k_t, v_t in zip(q.to(dtype).unbind(1), k.to(dtype).unbind(1), v.to(dtype).unbind(1)):
        state = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
        outputs.append(torch.einsum("bhk,bhkv->bhv", q_t, state))
    o = torch.stack(outputs, dim=1).to(q.dtype)
    return o, (state if output_final_state else None)
