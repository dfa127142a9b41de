"""Corpora: layouts recognised by name, fixed splits, the token cache, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from fwp.errors import UserError
from fwp.lm.data import find_source, load_corpus, stdlib_source
from fwp.lm.tokenizer import ByteTokenizer, CharTokenizer, tokenizer_from_dict

TEXT = "The quick brown fox — jumps over the lazy dog. ünïcödé\n" * 40


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FWP_CACHE", str(tmp_path / "cache"))


def test_one_file_is_split_90_5_5_and_decodes_back(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text(TEXT)
    corpus = load_corpus(str(path))
    raw = TEXT.encode()
    lengths = [len(corpus.tokens[s]) for s in ("train", "valid", "test")]
    assert sum(lengths) == len(raw) and abs(lengths[0] - 0.9 * len(raw)) < 4
    joined = b"".join(bytes(corpus.tokens[s]) for s in ("train", "valid", "test"))
    assert joined == raw
    assert isinstance(corpus.tokens["train"], np.memmap)
    assert corpus.bytes_per_token("valid") == 1.0


def test_char_tokenizer_and_cuts_on_character_boundaries(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text(TEXT)
    corpus = load_corpus(str(path), "chars")
    text = "".join(corpus.tokenizer.decode(corpus.tokens[s]) for s in ("train", "valid", "test"))
    assert text == TEXT and "\ufffd" not in text
    tok = corpus.tokenizer
    assert isinstance(tok, CharTokenizer) and tok.vocab_size == len(set(TEXT)) + 1
    assert tok.decode(tok.encode("fox?")) == "fox\ufffd"  # '?' is not in the training text
    assert tokenizer_from_dict(tok.to_dict()).chars == tok.chars
    assert corpus.bytes_per_token("train") > 1.0  # multi-byte characters


def test_layouts_are_recognised_by_name(tmp_path):
    wiki = tmp_path / "wikitext-103"
    wiki.mkdir()
    for split in ("train", "valid", "test"):
        (wiki / f"wiki.{split}.tokens").write_text(f" = {split} = \n" + TEXT)
    assert find_source(str(wiki)).layout.startswith("WikiText")
    corpus = load_corpus(str(wiki))
    assert bytes(corpus.tokens["valid"][:11]) == b" = valid = "
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("train.txt", "validation.txt", "test"):
        (folder / name).write_text(TEXT)
    assert find_source(str(folder)).splits["valid"][0].path.name == "validation.txt"
    enwik8 = tmp_path / "enwik8"
    enwik8.write_bytes(b"x" * 1000)
    pieces = find_source(str(enwik8)).splits
    assert [(p[0].start, p[0].end) for p in pieces.values()] == [(0, 900), (900, 950),
                                                                  (950, 1000)]


def test_the_cache_is_built_once_and_reused(tmp_path, capsys):
    path = tmp_path / "story.txt"
    path.write_text(TEXT)
    load_corpus(str(path))
    assert "tokenising" in capsys.readouterr().err
    load_corpus(str(path))
    assert capsys.readouterr().err == ""
    path.write_text(TEXT + "more\n")  # a changed source is tokenised again
    assert len(load_corpus(str(path)).tokens["train"]) > 0
    assert "tokenising" in capsys.readouterr().err


def test_the_unigram_bar_is_the_entropy_of_byte_frequencies(tmp_path):
    path = tmp_path / "ab.txt"
    path.write_bytes(b"ab" * 50_000)
    corpus = load_corpus(str(path))
    # Two equally likely bytes (add-one smoothing over 256 ids barely moves it): ≈ 1 bit.
    assert 1.0 < corpus.unigram_bits_per_byte("valid") < 1.01


def test_bad_input_gets_one_line(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_corpus(str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(UserError, match="is empty"):
        load_corpus(str(empty))
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hello world\n")
    with pytest.raises(UserError, match="too short to split 90/5/5 \\(12 bytes"):
        load_corpus(str(tiny))
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(UserError, match="looks binary"):
        load_corpus(str(binary))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café olé ".encode("latin-1") * 20)
    with pytest.raises(UserError, match="not UTF-8"):
        load_corpus(str(latin1))
    folder = tmp_path / "stuff"
    folder.mkdir()
    (folder / "train.txt").write_text(TEXT)
    with pytest.raises(UserError, match="wiki"):
        load_corpus(str(folder))
    with pytest.raises(UserError, match="no such file"):
        load_corpus(str(tmp_path / "story.txt"), str(tmp_path / "tokenizer.json"))


def test_builtin_corpus_split_is_by_file_and_fixed():
    source = stdlib_source()
    files = {s: {p.path for p in pieces} for s, pieces in source.splits.items()}
    assert not files["train"] & files["valid"] and not files["valid"] & files["test"]
    sizes = {s: sum(p.size() for p in pieces) for s, pieces in source.splits.items()}
    assert sizes["train"] > 3_000_000 and sizes["valid"] > 100_000 and sizes["test"] > 100_000
    assert not any("site-packages" in str(p) for p in files["train"])
    assert stdlib_source().splits == source.splits


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("naïve ✓")) == "naïve ✓"
