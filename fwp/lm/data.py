"""Text corpora for language modelling: where the text is, its fixed split, and its tokens.

``--data`` takes

- ``stdlib``, the built-in corpus: the ``*.py`` sources of the running Python's standard library
  (the Python Software Foundation License, like Python itself), test folders and
  ``site-packages`` left out — text that every Python installation carries, so nothing is
  downloaded. About 11 MB on Python 3.11. Split by file, fixed: a file goes to train, valid or
  test by the SHA-1 of its path relative to the library (90 / 5 / 5 %), so a file added in another
  Python version moves no other file. The exact bytes therefore depend on the Python version; the
  cache's ``meta.json`` and every run record the version and each split's SHA-256.
- a folder with WikiText-103's (or WikiText-2's) ``wiki.{train,valid,test}.tokens`` (or ``.raw``);
- a file named ``enwik8``: its standard split, the first 90 % (90M) / next 5 % / last 5 % of bytes;
- a folder with ``train``, ``valid`` (or ``validation``, ``val``) and ``test`` files (``.txt`` or
  no suffix);
- any other text file: 90 / 5 / 5 % of its bytes in order (cuts moved to a character boundary).

Tokens are written once per (source, tokenizer) to ``$FWP_CACHE/lm/<key>/{split}.bin``, flat
uint8/uint16/uint32 arrays, and memory-mapped afterwards, so a corpus of any size trains without
being held in memory. The key hashes the source files' paths, sizes and times and the tokenizer.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fwp.data.cache import cache_dir, cache_key, file_stamp, write_entry
from fwp.errors import UserError
from fwp.lm.tokenizer import (
    ByteTokenizer,
    CharTokenizer,
    Tokenizer,
    dtype_for,
    pretrained_tokenizer,
    tokenizer_from_dict,
)

SPLITS = ("train", "valid", "test")
BUILTIN = ("stdlib",)
SPLIT_FRACTIONS = (0.90, 0.05, 0.05)
SPLIT_NAMES = {"train": ("train",), "valid": ("valid", "validation", "val"), "test": ("test",)}
SKIPPED_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}
CHUNK = 8 << 20  # bytes read at a time while tokenising
FORMAT = 1


@dataclass(frozen=True)
class Piece:
    """Bytes ``[start, end)`` of a file (``end = None``: to its end)."""

    path: Path
    start: int = 0
    end: int | None = None

    def size(self) -> int:
        return (self.path.stat().st_size if self.end is None else self.end) - self.start


@dataclass
class Source:
    """Where each split's text lies, and which layout was recognised."""

    name: str
    layout: str
    splits: dict[str, list[Piece]]
    info: dict = field(default_factory=dict)


# -- finding the text -------------------------------------------------------------------------


def stdlib_source() -> Source:
    """The built-in corpus (see the module docstring)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    splits: dict[str, list[Piece]] = {s: [] for s in SPLITS}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if SKIPPED_DIRS & set(relative.parts[:-1]) or not path.is_file():
            continue
        bucket = int(hashlib.sha1(relative.as_posix().encode()).hexdigest(), 16) % 100
        split = "train" if bucket < 90 else "valid" if bucket < 95 else "test"
        splits[split].append(Piece(path))
    info = {"python": sys.version.split()[0], "root": str(root),
            "files": {s: len(p) for s, p in splits.items()}, "licence": "PSF License"}
    return Source("stdlib", "built-in: Python standard library sources", splits, info)


def _boundary(path: Path, offset: int) -> int:
    """The first offset ≥ ``offset`` that starts a UTF-8 character (not a continuation byte)."""
    with path.open("rb") as handle:
        handle.seek(offset)
        tail = handle.read(4)
    for i, byte in enumerate(tail):
        if byte & 0xC0 != 0x80:
            return offset + i
    return offset + len(tail)


def _split_file(path: Path, exact: bool) -> dict[str, list[Piece]]:
    size = path.stat().st_size
    cuts = [round(size * SPLIT_FRACTIONS[0]), round(size * sum(SPLIT_FRACTIONS[:2]))]
    if not exact:
        cuts = [_boundary(path, c) for c in cuts]
    bounds = [0, *cuts, size]
    return {s: [Piece(path, bounds[i], bounds[i + 1])] for i, s in enumerate(SPLITS)}


def _folder_splits(folder: Path) -> tuple[str, dict[str, list[Piece]]] | None:
    for suffix in (".tokens", ".raw"):
        files = {s: folder / f"wiki.{s}{suffix}" for s in SPLITS}
        if all(f.is_file() for f in files.values()):
            return f"WikiText (wiki.*{suffix})", {s: [Piece(f)] for s, f in files.items()}
    found = {}
    for split, names in SPLIT_NAMES.items():
        hits = [folder / f"{n}{ext}" for n in names for ext in (".txt", "")]
        hits = [h for h in hits if h.is_file()]
        if hits:
            found[split] = [Piece(hits[0])]
    if len(found) == len(SPLITS):
        return "folder with train / valid / test files", found
    return None


def find_source(data: str) -> Source:
    """The :class:`Source` that ``--data`` names (see the module docstring)."""
    if data in BUILTIN:
        return stdlib_source()
    path = Path(data).expanduser()
    if path.is_dir():
        found = _folder_splits(path)
        if found is None:
            raise UserError(
                f"--data {path}: a folder needs wiki.{{train,valid,test}}.tokens (WikiText) or "
                f"train, valid and test files (.txt or no suffix); pass a single file instead to "
                f"have it split 90/5/5"
            )
        layout, splits = found
        return Source(path.name, layout, splits)
    if not path.is_file():
        raise UserError(
            f"--data {data}: no such file or folder; pass a text file, a folder, or the "
            f"built-in corpus {', '.join(BUILTIN)}"
        )
    if path.name == "enwik8":
        return Source("enwik8", "enwik8 (standard 90/5/5 split)", _split_file(path, exact=True))
    return Source(path.stem, "one file, split 90/5/5", _split_file(path, exact=False))


def check_text(source: Source) -> None:
    """One clear line for an empty split, or a file that is not UTF-8 text, before any work."""
    for split, pieces in source.splits.items():
        if sum(p.size() for p in pieces) == 0:
            if len(pieces) == 1 and pieces[0].end is not None and pieces[0].path.stat().st_size:
                size = pieces[0].path.stat().st_size
                raise UserError(f"{pieces[0].path} is too short to split 90/5/5 ({size} bytes "
                                f"leave its {split} split empty): give a longer text, or a "
                                f"folder with train, valid and test files")
            what = pieces[0].path if len(pieces) == 1 else f"the {split} split of {source.name}"
            raise UserError(f"{what} is empty ({split} split): give a text with some content")
    if source.name in BUILTIN:
        return
    for pieces in source.splits.values():
        for piece in pieces:
            _check_utf8(piece)


def _check_utf8(piece: Piece) -> None:
    with piece.path.open("rb") as handle:
        handle.seek(piece.start)
        head = handle.read(min(1 << 20, piece.size()))
    if b"\0" in head:
        raise UserError(
            f"{piece.path} looks binary (a NUL byte at offset {piece.start + head.index(0)}): "
            f"fwp lm reads UTF-8 text"
        )
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as error:
        raise UserError(
            f"{piece.path} is not UTF-8 text (bad byte at offset {piece.start + error.start}); "
            f"convert it, e.g. iconv -t utf-8"
        ) from None


# -- reading and tokenising -------------------------------------------------------------------


def read_bytes(pieces: list[Piece]) -> Iterator[bytes]:
    for piece in pieces:
        with piece.path.open("rb") as handle:
            handle.seek(piece.start)
            left = piece.size()
            while left > 0:
                block = handle.read(min(CHUNK, left))
                if not block:
                    break
                left -= len(block)
                yield block


def read_text(pieces: list[Piece]) -> Iterator[str]:
    """The pieces' text in chunks that end at a newline (so that a tokenizer never sees a word
    cut in two), decoded with U+FFFD for invalid bytes."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    carry = ""
    for block in read_bytes(pieces):
        text = carry + decoder.decode(block)
        cut = text.rfind("\n") + 1
        carry = text[cut:] if cut else text
        if cut:
            yield text[:cut]
    carry += decoder.decode(b"", final=True)
    if carry:
        yield carry


def make_tokenizer(spec: str, source: Source) -> Tokenizer:
    """``bytes``, ``chars`` (built from the training split) or a ``tokenizer.json`` path."""
    if spec == "bytes":
        return ByteTokenizer()
    if spec == "chars":
        chars: set[str] = set()
        for text in read_text(source.splits["train"]):
            chars.update(text)
        return CharTokenizer(chars)
    return pretrained_tokenizer(spec)


def _write_split(path: Path, pieces: list[Piece], tokenizer: Tokenizer) -> dict:
    """Tokenise ``pieces`` into the flat array file ``path``; its count, bytes and SHA-256."""
    dtype = dtype_for(tokenizer.vocab_size)
    digest, n_bytes, n_tokens = hashlib.sha256(), 0, 0
    counts = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    with path.open("wb") as out:
        if isinstance(tokenizer, ByteTokenizer):
            for block in read_bytes(pieces):
                digest.update(block)
                ids = np.frombuffer(block, dtype=np.uint8)
                ids.tofile(out)
                counts += np.bincount(ids, minlength=256)
                n_bytes += len(block)
                n_tokens += len(ids)
        else:
            for text in read_text(pieces):
                raw = text.encode("utf-8")
                digest.update(raw)
                ids = tokenizer.encode(text)
                ids.astype(dtype).tofile(out)
                counts += np.bincount(ids, minlength=tokenizer.vocab_size)
                n_bytes += len(raw)
                n_tokens += len(ids)
    return {"tokens": n_tokens, "bytes": n_bytes, "sha256": digest.hexdigest(),
            "counts": counts.tolist()}


def _build(path: Path, source: Source, tokenizer: Tokenizer, key_parts: dict) -> None:
    print(f"fwp: tokenising {source.name} ({source.layout}) into {path} (once)", file=sys.stderr,
          flush=True)

    def fill(tmp: Path) -> None:
        splits = {s: _write_split(tmp / f"{s}.bin", p, tokenizer)
                  for s, p in source.splits.items()}
        meta = {"format": FORMAT, "name": source.name, "layout": source.layout,
                "info": source.info, "tokenizer": tokenizer.to_dict(),
                "dtype": dtype_for(tokenizer.vocab_size).name, "splits": splits,
                "key": key_parts}
        (tmp / "meta.json").write_text(json.dumps(meta))

    write_entry(path, fill, "token cache")


# -- the corpus -------------------------------------------------------------------------------


@dataclass
class Corpus:
    """Token arrays of the three splits (memory-mapped), with what they were built from."""

    name: str
    layout: str
    tokenizer: Tokenizer
    tokens: dict[str, np.ndarray]
    n_bytes: dict[str, int]
    counts: dict[str, np.ndarray]
    info: dict
    sha256: dict[str, str]

    def bytes_per_token(self, split: str) -> float:
        return self.n_bytes[split] / max(1, len(self.tokens[split]))

    def unigram_bits_per_byte(self, split: str = "valid") -> float:
        """Bits per byte of ``split`` under the training split's token frequencies (add-one
        smoothed): what a model that ignores all context achieves, the bar to clear."""
        train = self.counts["train"].astype(np.float64) + 1.0
        log_p = np.log2(train / train.sum())
        counts = self.counts[split]
        return float(-(counts * log_p).sum() / max(1, self.n_bytes[split]))

    def describe(self) -> str:
        sizes = ", ".join(f"{s} {len(self.tokens[s]):,}" for s in SPLITS)
        return f"{self.name} ({self.layout}): tokens {sizes}"


def load_corpus(data: str, tokenizer: str | Tokenizer = "bytes") -> Corpus:
    """The corpus ``data`` names, tokenised by ``tokenizer`` (a spec, or a saved tokenizer so
    that a trained model reads new text with its own vocabulary), from the cache or built."""
    source = find_source(data)
    check_text(source)
    if isinstance(tokenizer, str):
        tokenizer = make_tokenizer(tokenizer, source)
    stamps = {s: [(*file_stamp([p.path])[0], p.start, p.end) for p in pieces]
              for s, pieces in source.splits.items()}
    tok = tokenizer.to_dict()
    key_parts = {"source": stamps, "tokenizer": hashlib.sha256(
        json.dumps(tok, sort_keys=True).encode()).hexdigest(), "format": FORMAT}
    path = cache_dir() / "lm" / cache_key(**key_parts)
    if not (path / "meta.json").is_file():
        _build(path, source, tokenizer, key_parts)
    return _open(path)


def _open(path: Path) -> Corpus:
    meta = json.loads((path / "meta.json").read_text())
    tokens, n_bytes, counts, sha = {}, {}, {}, {}
    for split in SPLITS:
        entry = meta["splits"][split]
        tokens[split] = (np.memmap(path / f"{split}.bin", dtype=meta["dtype"], mode="r")
                         if entry["tokens"] else np.zeros(0, dtype=meta["dtype"]))
        n_bytes[split], sha[split] = entry["bytes"], entry["sha256"]
        counts[split] = np.asarray(entry["counts"], dtype=np.int64)
    return Corpus(meta["name"], meta["layout"], tokenizer_from_dict(meta["tokenizer"]), tokens,
                  n_bytes, counts, meta["info"], sha)

