"""Length bins, fixed test sets and padded batches for the formal-language task."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from fwp.errors import UserError
from fwp.formal.languages import Language


@dataclass(frozen=True)
class Bin:
    """An inclusive range of string lengths, written ``"51-100"`` (or ``"60"`` for one length)."""

    lo: int
    hi: int

    @classmethod
    def parse(cls, text: str) -> Bin:
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(text))
        if match is None:
            raise UserError(f"bad length bin {text!r}; write it as LO-HI, e.g. 51-100")
        lo = int(match.group(1))
        hi = int(match.group(2) or lo)
        if lo < 1 or hi < lo:
            raise UserError(f"bad length bin {text!r}: need 1 <= LO <= HI, e.g. 51-100")
        return cls(lo, hi)

    def __str__(self) -> str:
        return f"{self.lo}-{self.hi}"


@dataclass
class Batch:
    """Padded batch: ``tokens [B, T]`` (pad = ``len(alphabet)``), ``targets [B, T, C]`` multi-hot
    over ``language.classes``, ``mask [B, T]`` (True on real positions)."""

    tokens: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor


def encode(language: Language, strings: list[str]) -> Batch:
    """Pad ``strings`` into one :class:`Batch`, targets from ``language.targets``."""
    if not strings:
        raise UserError("cannot encode an empty list of strings")
    index = {c: i for i, c in enumerate(language.alphabet)}
    length = max(len(s) for s in strings)
    tokens = np.full((len(strings), length), len(language.alphabet), dtype=np.int64)
    targets = np.zeros((len(strings), length, len(language.classes)), dtype=np.float32)
    mask = np.zeros((len(strings), length), dtype=bool)
    for b, s in enumerate(strings):
        tokens[b, : len(s)] = [index[c] for c in s]
        targets[b, : len(s)] = language.targets(s)
        mask[b, : len(s)] = True
    return Batch(torch.from_numpy(tokens), torch.from_numpy(targets), torch.from_numpy(mask))


def bin_seed(seed: int, language: Language, bin_: Bin) -> int:
    """A seed for one (language, bin) test set, stable across runs and Python versions."""
    key = f"{language.name}:{bin_}".encode()
    return int.from_bytes(np.random.SeedSequence([seed, *key]).generate_state(2).tobytes()[:8],
                          "little") & (2**63 - 1)


def sample_test_set(language: Language, bin_: Bin, size: int, seed: int) -> list[str]:
    """The fixed test strings of one bin: the same for every model given the same ``seed``."""
    rng = np.random.default_rng(bin_seed(seed, language, bin_))
    return language.sample_bin(bin_.lo, bin_.hi, size, rng)


def batches(strings: list[str], batch_size: int) -> list[list[str]]:
    """Consecutive chunks, sorted by length first so that each chunk pads little."""
    ordered = sorted(strings, key=len)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
