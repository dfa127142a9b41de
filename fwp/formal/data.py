"""Bins, the fixed data sets of the published protocol, and padded batches.

Published protocol (Bhattamishra et al. 2020, used as is by Irie, Csordás & Schmidhuber 2023):
a fixed training set of ``train_size`` strings drawn from the public generator on the training
bin, a validation set from the same distribution, and ``eval_size`` strings per test bin. Where
a language has few strings per bin (the counters, (aa)*, (abab)*), a test or validation set is
every string of the bin and the training set repeats them as the generator draws them; elsewhere
every set is deduplicated, and the training set, the validation set and the test set of the
training bin are disjoint (one deduplicated pool, split).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from fwp.errors import UserError
from fwp.formal.languages import Language, get_language
from fwp.formal.tasks import TokenTask


@dataclass(frozen=True)
class Bin:
    """An inclusive range written ``"51-100"`` (or ``"60"``): of string lengths, or of n for the
    counter languages (see :attr:`fwp.formal.languages.Language.bin_unit`)."""

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
    """Padded batch: ``tokens [B, T]`` (pad = ``len(alphabet)``), ``targets [B, T, C]`` over
    ``language.classes``, ``mask [B, T]`` (True on scored positions: every real position of a
    language string, the answer positions of a task). ``exclusive``: one class per position
    (tasks: one-hot targets, cross-entropy, arg-max) instead of a multi-hot set (languages:
    binary cross-entropy per class, thresholded at 0)."""

    tokens: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    exclusive: bool = False


def encode(language: Language | TokenTask, strings: list[str]) -> Batch:
    """Pad ``strings`` into one :class:`Batch`, targets from ``language.targets``."""
    if not strings:
        raise UserError("cannot encode an empty list of strings")
    index = {c: i for i, c in enumerate(language.alphabet)}
    sequences = [language.tokens(s) for s in strings]
    length = max(len(s) for s in sequences)
    tokens = np.full((len(strings), length), len(language.alphabet), dtype=np.int64)
    targets = np.zeros((len(strings), length, len(language.classes)), dtype=np.float32)
    mask = np.zeros((len(strings), length), dtype=bool)
    for b, (s, sequence) in enumerate(zip(strings, sequences)):
        tokens[b, : len(sequence)] = [index[c] for c in sequence]
        targets[b, : len(sequence)] = language.targets(s)
        mask[b, : len(sequence)] = language.scored(s)
    return Batch(torch.from_numpy(tokens), torch.from_numpy(targets), torch.from_numpy(mask),
                 language.exclusive)


def batch_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean loss over the scored positions: cross-entropy for exclusive classes, else binary
    cross-entropy averaged over the classes (Bhattamishra et al. 2020)."""
    if batch.exclusive:
        per_position = -(F.log_softmax(logits, dim=-1) * batch.targets).sum(-1)
        return (per_position * batch.mask).sum() / batch.mask.sum()
    loss = F.binary_cross_entropy_with_logits(logits, batch.targets, reduction="none")
    return (loss.sum(-1) * batch.mask).sum() / (batch.mask.sum() * logits.shape[-1])


def position_correct(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """``[B, T]`` bool: the arg-max is the answer (exclusive), or every class's yes/no is."""
    if batch.exclusive:
        return logits.argmax(-1) == batch.targets.argmax(-1)
    return ((logits > 0) == (batch.targets > 0.5)).all(-1)


def bin_seed(seed: int, language: Language, bin_: Bin) -> int:
    """A seed for one (language, bin) test set, stable across runs and Python versions."""
    key = f"{language.name}:{bin_}".encode()
    return int.from_bytes(np.random.SeedSequence([seed, *key]).generate_state(2).tobytes()[:8],
                          "little") & (2**63 - 1)


def sample_test_set(language: Language, bin_: Bin, size: int, seed: int) -> list[str]:
    """Uniformly sampled test strings of one bin (stream protocol), fixed by ``seed``."""
    rng = np.random.default_rng(bin_seed(seed, language, bin_))
    return language.sample_bin(bin_.lo, bin_.hi, size, rng)


def published_draws(language: Language, bin_: Bin, size: int, rng: np.random.Generator,
                    unique: bool, exclude: frozenset[str] = frozenset()) -> list[str]:
    """``size`` draws of the public generator in ``bin_`` (not in ``exclude``; distinct ones if
    ``unique``). A unique set of a language with few strings per bin is all of them (sorted)."""
    every = language.all_strings(bin_.lo, bin_.hi)
    if every is not None and not every:
        language.bin_lengths(bin_.lo, bin_.hi)  # raises the "widen the bin" error
    if unique and every is not None and len(every) <= size:
        return every
    out: list[str] = []
    seen = set(exclude)
    misses = 0
    while len(out) < size:
        string = language.draw_published(bin_.lo, bin_.hi, rng)
        if string is None or (unique and string in seen):
            misses += 1
            if misses > 200 * size + 10_000:
                raise UserError(
                    f"the {language.name} generator gave only {len(out)} distinct new strings in "
                    f"bin {bin_} after {misses} rejected draws; lower the set size "
                    f"(--train-size, --valid-size, --eval-size) or widen the bin"
                )
            continue
        out.append(string)
        if unique:
            seen.add(string)
    return out


@dataclass
class DataSets:
    """The fixed strings of one run: ``train``, ``valid`` and one test set per bin.

    The test sets are built on first use and every use is counted in ``test_reads``, so that a
    selection rule can be checked never to look at them.
    """

    language: Language
    train: list[str]
    valid: list[str]
    _tests: dict[str, list[str]]
    test_reads: int = 0

    def test(self, bin_: str) -> list[str]:
        self.test_reads += 1
        return self._tests[str(Bin.parse(bin_))]

    @property
    def test_bins(self) -> list[str]:
        return list(self._tests)


def published_data(language_name: str, train_bin: str, bins: list[str], train_size: int,
                   valid_size: int, eval_size: int, seed: int,
                   cache_dir: Path | None = None) -> DataSets:
    """The fixed data sets of the published protocol, deterministic in all arguments.

    Languages with many strings per bin: one deduplicated pool of the training bin is split into
    the training set, the validation set and (when the training bin is also a test bin) its test
    set, all disjoint; the other test bins are deduplicated draws of their own. Languages with
    few strings (counters, (aa)*, (abab)*): the training set is ``train_size`` draws with
    repeats, as the public generator makes it; validation and test sets are every string of
    their bin (at most their size). With ``cache_dir`` the sets are stored there as JSON, keyed
    by the arguments, and read back on the next call.
    """
    language = get_language(language_name)
    key = {"language": language.name, "train_bin": str(Bin.parse(train_bin)),
           "bins": [str(Bin.parse(b)) for b in bins], "train_size": train_size,
           "valid_size": valid_size, "eval_size": eval_size, "seed": seed, "version": 1}
    path = None
    if cache_dir is not None:
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        path = Path(cache_dir) / f"{language.name}-{digest}.json"
        stored = _read_cached(path, key)
        if stored is not None:
            return DataSets(language, stored["train"], stored["valid"], stored["tests"])
    home = Bin.parse(train_bin)
    rng = np.random.default_rng(bin_seed(seed, language, home))
    finite = language.all_strings(home.lo, home.hi) is not None
    home_test = str(home) in key["bins"]
    tests: dict[str, list[str]] = {}
    if finite:
        train = published_draws(language, home, train_size, rng, unique=False)
        valid = published_draws(language, home, valid_size, rng, unique=True)
    else:
        pool = published_draws(language, home, train_size + valid_size
                               + (eval_size if home_test else 0), rng, unique=True)
        train, valid = pool[:train_size], pool[train_size:train_size + valid_size]
        if home_test:
            tests[str(home)] = pool[train_size + valid_size:]
    for text in key["bins"]:
        if text in tests:
            continue
        b = Bin.parse(text)
        tests[text] = published_draws(language, b, eval_size,
                                      np.random.default_rng(bin_seed(seed, language, b)),
                                      unique=True)
    tests = {b: tests[b] for b in key["bins"]}
    if path is not None:
        from fwp.config import write_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, {**key, "train": train, "valid": valid, "tests": tests})
    return DataSets(language, train, valid, tests)


def _read_cached(path: Path, key: dict) -> dict | None:
    """The stored data sets of ``key``; None (rebuilt and rewritten) when the file is missing
    or damaged: cut off, not JSON, or not the sets of ``key``."""
    try:
        stored = json.loads(path.read_text())
        sets = [stored["train"], stored["valid"], *stored["tests"].values()]
        whole = (all(stored[k] == v for k, v in key.items())
                 and list(stored["tests"]) == key["bins"]
                 and all(isinstance(s, list) and all(isinstance(x, str) for x in s)
                         for s in sets))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return stored if whole else None


def batches(strings: list[str], batch_size: int) -> list[list[str]]:
    """Consecutive chunks, sorted by length first so that each chunk pads little."""
    ordered = sorted(strings, key=len)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
