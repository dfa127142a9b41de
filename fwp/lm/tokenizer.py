"""Text ↔ token ids: bytes (the default), characters, or a ``tokenizers`` model.

Every tokenizer encodes a string to a 1-D integer array and decodes ids back to a string, has a
``vocab_size``, and is saved into a run folder as a small JSON-able dict (:meth:`to_dict`), so that
a trained model never depends on the file or corpus it was built from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from fwp.errors import UserError

UNKNOWN = "\ufffd"  # the replacement character stands for characters unseen in training


class Tokenizer(Protocol):
    kind: str
    vocab_size: int

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def to_dict(self) -> dict: ...


class ByteTokenizer:
    """UTF-8 bytes: 256 ids, nothing to learn, every text encodes (bits per token = per byte)."""

    kind, vocab_size = "bytes", 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        return {"kind": self.kind}


class CharTokenizer:
    """Unicode characters seen in the training text, in code-point order, plus one id
    (the last) for any character not seen there (decoded as U+FFFD)."""

    kind = "chars"

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = sorted(set(chars) - {UNKNOWN})
        self.codepoints = np.array([ord(c) for c in self.chars], dtype=np.int64)
        self.vocab_size = len(self.chars) + 1

    def encode(self, text: str) -> np.ndarray:
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ids = np.searchsorted(self.codepoints, points)
        known = ids < len(self.chars)
        known[known] = self.codepoints[ids[known]] == points[known]
        return np.where(known, ids, len(self.chars))

    def decode(self, ids: Iterable[int]) -> str:
        table = self.chars + [UNKNOWN]
        return "".join(table[int(i)] for i in ids)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": "".join(self.chars)}


class PretrainedTokenizer:
    """A model of the ``tokenizers`` library (a ``tokenizer.json``), e.g. a byte-level BPE."""

    kind = "tokenizers"

    def __init__(self, json_text: str, source: str = "") -> None:
        try:
            from tokenizers import Tokenizer as Model
        except ImportError:
            raise UserError(
                "a tokenizer.json needs the tokenizers library: pip install tokenizers "
                "(or the fwp[hf] extra), or use --tokenizer bytes"
            ) from None
        try:
            self.model = Model.from_str(json_text)
        except Exception as error:  # noqa: BLE001 — the library raises plain Exceptions
            raise UserError(f"{source or 'the tokenizer'} is not a tokenizers JSON file: "
                            f"{str(error).splitlines()[0]}") from None
        self.json_text = json_text
        self.vocab_size = self.model.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.model.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return self.model.decode([int(i) for i in ids], skip_special_tokens=False)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "json": self.json_text}


def tokenizer_from_dict(data: dict) -> Tokenizer:
    """The tokenizer :meth:`to_dict` saved."""
    kind = data.get("kind")
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "chars":
        return CharTokenizer(data["chars"])
    if kind == "tokenizers":
        return PretrainedTokenizer(data["json"])
    raise UserError(f"unknown tokenizer kind {kind!r} in a saved run; was it written by fwp?")


def pretrained_tokenizer(path: str | Path) -> PretrainedTokenizer:
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"--tokenizer {path}: no such file; pass bytes, chars, or a tokenizer.json"
        )
    return PretrainedTokenizer(path.read_text(), str(path))


def dtype_for(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id (uint8 for bytes)."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise UserError(f"a vocabulary of {vocab_size} ids is too large")


def describe(tokenizer: Tokenizer) -> str:
    if isinstance(tokenizer, PretrainedTokenizer):
        model = json.loads(tokenizer.json_text).get("model", {}).get("type", "?")
        return f"tokenizers {model} ({tokenizer.vocab_size} ids)"
    return f"{tokenizer.kind} ({tokenizer.vocab_size} ids)"
