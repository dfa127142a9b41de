"""Sampling text from a language model whose state is its cache.

The prompt is read in one call; after that each new token is one call on ``[B, 1]`` with the
state returned by the previous call. A fast weight layer's state has a fixed size (``[B, H, K,
V]`` per layer), so every generated token costs the same time and memory however long the text
already is; a softmax layer's state is its key/value cache, which grows by one position per
token (``benchmarks/generation.py`` measures both).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fwp.errors import UserError


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    if temperature < 0:
        raise UserError(f"--temperature must be ≥ 0 (0: greedy), got {temperature}")
    if top_k < 0:
        raise UserError(f"--top-k must be ≥ 0 (0: no cut), got {top_k}")
    if not 0 < top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1] (1: no cut), got {top_p}")


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """``logits [..., V]`` with everything outside the ``top_k`` largest and outside the smallest
    set whose probability reaches ``top_p`` (nucleus sampling, Holtzman et al. 2020) set to −∞.
    The most likely token always stays."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already reach top_p.
        drop = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row of ``logits [B, V]``: argmax at temperature 0, else a draw from
    softmax(logits / temperature) restricted by :func:`filter_logits`. Returns ``[B]``."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    state: list[Any] | None = None,
) -> tuple[torch.Tensor, list[Any]]:
    """Continue ``prompt [B, P]`` (P ≥ 1) by ``max_new_tokens`` sampled tokens.

    ``model(tokens, state) -> (logits, state)``; ``state`` is what the model returned after
    the text before the prompt (None: the prompt starts the text). Returns ``(tokens [B, P +
    max_new_tokens], state after them)``.
    """
    check_sampling(temperature, top_k, top_p)
    if prompt.dim() != 2 or prompt.shape[1] < 1:
        raise UserError("the prompt needs at least one token (an empty prompt has no context); "
                        "pass some text with --prompt")
    logits, state = model(prompt, state)
    out = [prompt]
    for _ in range(max_new_tokens):
        token = sample_next(logits[:, -1], temperature, top_k, top_p, generator)[:, None]
        out.append(token)
        logits, state = model(token, state)
    return torch.cat(out, dim=1), state
