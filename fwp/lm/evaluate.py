"""Held-out bits per byte and perplexity, with the state carried through the text or reset.

The text (``max_tokens`` of it, or all) is cut into ``streams`` equal rows and read segment by
segment, predicting every token from the ones before it. ``carry=True`` hands each segment's
final state to the next, so with one stream every prediction sees the whole text before it (the
public code's ``eval.py --carry_over_fast_weight``; softmax layers see the last ``window``
tokens of earlier segments, the Transformer-XL memory). ``carry=False`` starts every segment from
the zero state, so a prediction sees only the tokens before it in its segment. Both score the same
tokens.

bits per byte = (Σ −ln p) / ln 2 / (bytes of the scored text), the bytes being the UTF-8 size of
the text the tokens came from (the corpus' bytes per token times the tokens scored); with the byte
tokenizer it is bits per token. Perplexity is per token: exp(mean −ln p).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from fwp.errors import UserError
from fwp.layers import detach_state
from fwp.lm.model import FwpLM


@torch.no_grad()
def score(
    model: FwpLM,
    tokens: np.ndarray,
    segment_len: int,
    carry: bool = True,
    window: int = 0,
    max_tokens: int = 0,
    streams: int = 1,
) -> tuple[float, int]:
    """``(Σ −ln p over the scored tokens, number scored)``; ``window`` as :meth:`trim_cache`."""
    n = len(tokens) if max_tokens <= 0 else min(len(tokens), max_tokens)
    row_len = n // streams
    if row_len < 2:
        raise UserError(f"{n} tokens cannot be cut into {streams} streams of at least 2 tokens; "
                        f"evaluate on more text or fewer streams")
    rows = torch.from_numpy(
        np.asarray(tokens[: row_len * streams]).astype(np.int64).reshape(streams, row_len))
    was_training = model.training
    model.eval()
    nats, count, state = 0.0, 0, None
    for start in range(0, row_len - 1, segment_len):
        end = min(start + segment_len, row_len - 1)
        logits, state = model(rows[:, start:end], state if carry else None)
        targets = rows[:, start + 1 : end + 1]
        nats += F.cross_entropy(logits.flatten(0, 1).double(), targets.flatten(),
                                reduction="sum").item()
        count += targets.numel()
        state = model.trim_cache(detach_state(state), window)
    model.train(was_training)
    return nats, count


def metrics(nats: float, count: int, bytes_per_token: float) -> dict[str, float]:
    """``bits_per_byte``, ``bits_per_token``, ``perplexity`` (per token), ``nats_per_token``."""
    per_token = nats / count
    return {
        "bits_per_byte": per_token / math.log(2) / bytes_per_token,
        "bits_per_token": per_token / math.log(2),
        "perplexity": math.exp(min(per_token, 700.0)),
        "nats_per_token": per_token,
        "tokens": count,
    }


def evaluate(
    model: FwpLM,
    tokens: np.ndarray,
    bytes_per_token: float,
    segment_len: int,
    window: int = 0,
    max_tokens: int = 0,
    streams: int = 1,
    modes: tuple[str, ...] = ("carried", "reset"),
) -> dict[str, dict[str, float]]:
    """:func:`metrics` per mode: ``carried`` (state through the text) and/or ``reset`` (zero
    state at each segment)."""
    return {
        mode: metrics(*score(model, tokens, segment_len, mode == "carried", window, max_tokens,
                             streams), bytes_per_token)
        for mode in modes
    }
