"""Contiguous training segments, so that a state can be carried from one to the next.

As the Transformer-XL iterator of the public recurrent-FWP language-model code
(``LMOrderedIterator``): the token array is cut into ``batch_size`` equal streams, one per batch
row, and step i reads the i-th segment of ``segment_len`` tokens of every stream (inputs) and the
same positions shifted by one (targets). Segment i + 1 of row b continues segment i of row b, so
the state after segment i is the right context for segment i + 1 (truncated backpropagation
through time: the state is carried, its graph cut). After the last segment the streams start
again from their beginning, and the state is reset there.

Rows are read from the (memory-mapped) array one segment at a time.
"""

from __future__ import annotations

import numpy as np
import torch

from fwp.errors import UserError


class Segments:
    """``batch(i) -> (inputs, targets)``, each ``[batch_size, segment_len]`` int64."""

    def __init__(self, tokens: np.ndarray, batch_size: int, segment_len: int,
                 split: str = "train") -> None:
        self.tokens, self.batch_size, self.segment_len = tokens, batch_size, segment_len
        self.stream_len = len(tokens) // batch_size
        self.n_segments = (self.stream_len - 1) // segment_len
        if self.n_segments < 1:
            raise UserError(
                f"the {split} split has {len(tokens):,} tokens, fewer than batch size "
                f"{batch_size} × (segment length {segment_len} + 1) = "
                f"{batch_size * (segment_len + 1):,}: use a smaller --batch-size or "
                f"--segment-len, or more text"
            )

    def starts_stream(self, i: int) -> bool:
        """Whether step ``i`` reads the first segment of the streams (the state resets)."""
        return i % self.n_segments == 0

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        offset = (i % self.n_segments) * self.segment_len
        rows = np.stack([
            np.asarray(self.tokens[b * self.stream_len + offset:
                                   b * self.stream_len + offset + self.segment_len + 1])
            for b in range(self.batch_size)
        ]).astype(np.int64)
        rows = torch.from_numpy(rows)
        return rows[:, :-1], rows[:, 1:]
