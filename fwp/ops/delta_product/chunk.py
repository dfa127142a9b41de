"""DeltaProduct through the chunked delta rule: the micro-steps become time steps.

Token t's n_h micro-steps are steps t·n_h … t·n_h + n_h − 1 of an ordinary delta rule of length
T·n_h. The query of token t sits at the last micro-step (every other query is zero), and only
those outputs are kept; the delta rule reads after its write, so the read sees all n_h updates.
Cost: one chunked delta rule of length T·n_h, so the WY form and its memory behaviour carry over.
"""

from __future__ import annotations

import torch

from fwp.ops.delta_rule.chunk import delta_rule_chunk


def delta_product_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    B, T, H, n_h, K = k.shape
    # [B, T, H, n_h, *] → [B, T·n_h, H, *], micro-steps of one token adjacent in time.
    k_flat, v_flat = (x.transpose(2, 3).flatten(1, 2) for x in (k, v))
    beta_flat = beta.transpose(2, 3).flatten(1, 2)
    q_flat = torch.cat([q.new_zeros(B, T, n_h - 1, H, K), q.unsqueeze(2)], dim=2).flatten(1, 2)
    o_flat, state = delta_rule_chunk(
        q_flat, k_flat, v_flat, beta_flat, initial_state, output_final_state, chunk_size
    )
    return o_flat.unflatten(1, (T, n_h))[:, :, -1], state
