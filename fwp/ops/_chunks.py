"""The chunk layout shared by the chunkwise-parallel operators: time cut into chunks of C steps.

``[B, T, H, *]`` ↔ ``[B, H, N, C, *]`` with N = ⌈T / C⌉, the last chunk zero-padded. Zero padding
is harmless for the sum and delta rules: a padded step has k = v = 0 (and β = 0), so it writes
nothing, and its outputs are cut off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_time(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Zero-pad dim 1 (time) up to a multiple of ``chunk_size``."""
    pad = -x.shape[1] % chunk_size
    if pad == 0:
        return x
    widths = [0, 0] * (x.dim() - 2) + [0, pad]
    return F.pad(x, widths)


def to_chunks(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """[B, T, H, *] → [B, H, N, C, *] with N = ceil(T / C), zero-padded."""
    x = pad_time(x, chunk_size)
    B, T, H = x.shape[:3]
    x = x.reshape(B, T // chunk_size, chunk_size, H, *x.shape[3:])
    return x.transpose(1, 3).transpose(2, 3)


def from_chunks(x: torch.Tensor, length: int) -> torch.Tensor:
    """[B, H, N, C, *] → [B, T, H, *], cutting the padding."""
    B, H, N, C = x.shape[:4]
    x = x.transpose(2, 3).transpose(1, 3).reshape(B, N * C, H, *x.shape[4:])
    return x[:, :length]
