"""Faults injected into data sets and their cache: wrongly typed options, a decompression bomb,
one image far larger than the rest, a set too large to decode, damaged cache entries, a pickle
that would run code. Each is one line naming the file or option and the fix, before any image is
decoded, and leaves no cache entry behind, or is repaired."""

from __future__ import annotations

import json
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fwp.cli import main
from fwp.data import load_dataset
from fwp.data.cache import cache_dir
from fwp.errors import UserError
from tests.data.trees import make_folder, make_miniimagenet_pickle


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fwp: error: "), err
    return err[0]


def entries(kind: str) -> set[str]:
    folder = cache_dir() / kind
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


@pytest.mark.parametrize("option, needs", [
    ("image_size=abc", "image_size='abc' of data set 'glyphs' needs an integer"),
    ("samples_per_class=2.5", "samples_per_class=2.5 of data set 'glyphs' needs an integer"),
    ("seed=abc", "seed='abc' of data set 'glyphs' needs an integer"),
])
def test_a_wrongly_typed_data_option_is_one_line(option, needs, tmp_path, capsys):
    out = tmp_path / "episode.png"
    assert main(["fewshot", "inspect", "--dataset", "glyphs", "--data-option", option,
                 "--out", str(out)]) == 2
    assert f"--data-option {needs}" in one_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize("value", ["no", "maybe", "1", "yes", "on"])
def test_a_boolean_option_takes_true_or_false_only(value, tmp_path, capsys):
    """``rotations=no`` was the string "no", which is true: Omniglot with rotations on. The
    check runs before the data root is read, so no Omniglot files are needed."""
    assert main(["fewshot", "train", "--out", str(tmp_path / "run"), "--dataset", "omniglot",
                 "--data-root", str(tmp_path), "--data-option", f"rotations={value}"]) == 2
    assert "rotations=" in (line := one_error(capsys)) and "needs true or false" in line
    assert not (tmp_path / "run").exists()
    with pytest.raises(UserError, match="needs true or false"):
        load_dataset("omniglot", tmp_path, rotations=value)


def test_typed_options_of_every_shape_are_accepted(tmp_path):
    make_folder(tmp_path, classes=3, per_class=2)
    for options in ({"image_size": 12}, {"image_size": [12, 14]}, {"channels": 3},
                    {"split_fractions": [1, 1, 1], "seed": 3}):
        assert load_dataset("folder", tmp_path, **options).num_images > 0
    with pytest.raises(UserError, match="split_fractions=.*needs a list of 3 numbers"):
        load_dataset("folder", tmp_path, split_fractions=[1, 1])
    with pytest.raises(UserError, match="needs an integer or a list of 2 integers"):
        load_dataset("folder", tmp_path, image_size="big")


def bomb_png(path: Path, width: int = 20_000, height: int = 20_000) -> None:
    """A 57-byte PNG whose header claims ``width`` × ``height`` pixels (400 M by default, over
    twice PIL's limit): opening it is PIL's DecompressionBombError."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("place", ["first", "later"])
def test_a_decompression_bomb_is_one_line_naming_the_file(place, tmp_path, capsys):
    """First: read for the set's default size (its header); later: decoded with the rest."""
    root = make_folder(tmp_path / "set", classes=3, per_class=2)
    bomb = root / "class00" / "0.png" if place == "first" else root / "class02" / "9.png"
    bomb_png(bomb)
    before = entries("folder")
    out = tmp_path / "episode.png"
    assert main(["fewshot", "inspect", "--dataset", "folder", "--data-root", str(root),
                 "--data-option", "image_size=10", "--out", str(out)]) == 2
    line = one_error(capsys)
    assert f"image {bomb} is too large to decode" in line and "DecompressionBomb" in line
    assert "replace it with a smaller copy or delete it" in line
    assert entries("folder") == before and not out.exists()


def test_one_image_far_larger_than_the_rest_does_not_set_the_size(tmp_path, capsys):
    root = make_folder(tmp_path / "set", classes=3, per_class=4)
    big = root / "class00" / "0.png"
    Image.new("L", (3000, 2000), 7).save(big)
    before = entries("folder")
    assert main(["fewshot", "inspect", "--dataset", "folder", "--data-root", str(root),
                 "--out", str(tmp_path / "episode.png")]) == 2
    line = one_error(capsys)
    assert f"the first image {big} is 2000×3000, far larger than the set's typical 10×10" in line
    assert "pass --data-option image_size=10" in line
    assert entries("folder") == before
    assert load_dataset("folder", root, image_size=10).image_shape == (1, 10, 10)  # the fix


def test_a_set_too_large_to_decode_is_refused_before_decoding(tmp_path):
    make_folder(tmp_path, classes=3, per_class=2)
    with pytest.raises(UserError, match=r"6 images of 1000000×1000000×1 would take .* GiB "
                                        r"decoded, more than half of this machine"):
        load_dataset("folder", tmp_path, image_size=1_000_000)


def _damage_meta_garbage(entry: Path) -> None:
    (entry / "meta.json").write_text("{not json")


def _damage_meta_key(entry: Path) -> None:
    meta = json.loads((entry / "meta.json").read_text())
    del meta["class_names"]
    (entry / "meta.json").write_text(json.dumps(meta))


def _damage_meta_list(entry: Path) -> None:
    (entry / "meta.json").write_text("[1, 2]")


def _damage_counts(entry: Path) -> None:
    meta = json.loads((entry / "meta.json").read_text())
    meta["class_counts"] = ["a"] * len(meta["class_counts"])
    (entry / "meta.json").write_text(json.dumps(meta))


def _damage_truncated_array(entry: Path) -> None:
    data = (entry / "images.npy").read_bytes()
    (entry / "images.npy").write_bytes(data[: len(data) // 2])


def _damage_array_dtype(entry: Path) -> None:
    images = np.load(entry / "images.npy")
    np.save(entry / "images.npy", images.astype(np.float32))


def _damage_array_missing(entry: Path) -> None:
    (entry / "images.npy").unlink()


def _damage_entry_is_a_file(entry: Path) -> None:
    import shutil

    shutil.rmtree(entry)
    entry.write_text("not a folder")


DAMAGES = [_damage_meta_garbage, _damage_meta_key, _damage_meta_list, _damage_counts,
           _damage_truncated_array, _damage_array_dtype, _damage_array_missing,
           _damage_entry_is_a_file]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__.removeprefix("_damage_"))
def test_a_damaged_cache_entry_is_rebuilt(damage, tmp_path, monkeypatch):
    monkeypatch.setenv("FWP_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "set" / "train", classes=3, per_class=2).parent
    first = load_dataset("folder", root, channels=3)
    expected = first.gather_uint8(np.arange(3), np.zeros(3, np.int64)).copy()
    (entry,) = (tmp_path / "cache" / "folder").iterdir()
    del first  # the memory map of images.npy
    damage(entry)
    again = load_dataset("folder", root, channels=3)
    assert np.array_equal(again.gather_uint8(np.arange(3), np.zeros(3, np.int64)), expected)
    assert [p.name for p in (tmp_path / "cache" / "folder").iterdir()] == [entry.name]
    assert sorted(p.name for p in entry.iterdir()) == ["images.npy", "meta.json"]


class _Payload:
    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __reduce__(self):
        return (Path.touch, (self.flag,))


def test_a_mini_imagenet_pickle_that_would_run_code_is_refused(tmp_path):
    flag = tmp_path / "ran"
    with open(tmp_path / "mini-imagenet-cache-train.pkl", "wb") as f:
        pickle.dump({"image_data": _Payload(flag), "class_dict": {}}, f)
    with pytest.raises(UserError, match=r"cannot read .*mini-imagenet-cache-train.pkl .*names "
                                        r"pathlib.*would run while loading"):
        load_dataset("miniimagenet", tmp_path, "train")
    assert not flag.exists()
    make_miniimagenet_pickle(tmp_path, "train", classes=2, per_class=3, size=12)  # the real one
    assert load_dataset("miniimagenet", tmp_path, "train", image_size=12).num_images == 6


def test_a_data_root_that_is_a_file_says_so(tmp_path):
    path = tmp_path / "images.zip"
    path.write_bytes(b"PK")
    with pytest.raises(UserError, match="image folder .*images.zip is a file, not a folder"):
        load_dataset("folder", path)
    assert os.listdir(tmp_path) == ["images.zip"]
