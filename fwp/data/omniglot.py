"""Omniglot (Lake et al. 2015) from the folders or ``.zip`` files a user already has.

Root layout: ``images_background/`` and/or ``images_evaluation/`` (or
``images_background_small1/2``), each ``<Alphabet>/<character>/<png>``, as folders or as the
original zips (read without unpacking).
Images become ``image_size`` x ``image_size`` x 1 with ink as foreground (1.0 after ``gather``).

Splits:

- ``lake`` (default): background -> train, minus a seeded carve-out of whole alphabets (about
  ``val_fraction`` of its characters) -> val; evaluation -> test.
- ``vinyals``: the 1028 / 172 / 423 characters of Vinyals et al. (2016), as in the split files of
  Prototypical Networks: the 1623 characters in order (background then evaluation, alphabets and
  characters sorted), the first 1200 train+val of which the alphabets of ``VINYALS_VAL`` are val,
  the last 423 test. Needs the full background and evaluation sets.

``rotations=True`` adds each character turned by 90, 180 and 270 degrees as three new classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fwp.data.cache import ImageStore, cache_key, cached_store
from fwp.data.dataset import FewShotDataset
from fwp.data.images import DecodeSpec, ImageFile, decode_files, is_image_name, open_zip
from fwp.errors import UserError

BACKGROUND, EVALUATION = "images_background", "images_evaluation"
SMALL = ("images_background_small1", "images_background_small2")
SOURCES = (BACKGROUND, EVALUATION, *SMALL)
FULL_COUNTS = {BACKGROUND: 964, EVALUATION: 659}
VINYALS_TRAINVAL = 1200
VINYALS_VAL = ("Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)")
EXPECTED = (
    "images_background/ and/or images_evaluation/ (folders of <Alphabet>/<character>/<png>), "
    "images_background_small1/ or _small2/, or the .zip files of those folders"
)


def _find_sources(root: Path) -> dict[str, Path]:
    """Source name -> folder or zip path."""
    if not root.exists():
        raise UserError(
            f"Omniglot root {root} does not exist; pass --data-root DIR, the folder that holds "
            f"{EXPECTED}"
        )
    if root.name in SOURCES or root.name.removesuffix(".zip") in SOURCES:  # the set itself
        return {root.name.removesuffix(".zip"): root}
    found = {}
    for name in SOURCES:
        if (root / name).is_dir():
            found[name] = root / name
        elif (root / f"{name}.zip").is_file():
            found[name] = root / f"{name}.zip"
    if not found:
        listing = sorted(p.name for p in root.iterdir())[:12] if root.is_dir() else [root.name]
        raise UserError(
            f"no Omniglot data in {root}: expected {EXPECTED}; found {listing or 'nothing'}"
        )
    return found


def _list_classes(name: str, path: Path) -> list[tuple[str, str, list[ImageFile]]]:
    """(alphabet, character, image files) of one source, sorted."""
    classes: dict[tuple[str, str], list[ImageFile]] = {}
    if path.suffix == ".zip":
        with open_zip(path) as archive:
            members = archive.namelist()
        # Members are [<set>/]<Alphabet>/<character>/<png>, with or without the top folder.
        prefix = f"{name}/" if any(m.startswith(f"{name}/") for m in members) else ""
        for member in members:
            parts = member.removeprefix(prefix).rstrip("/").split("/")
            if "__MACOSX" in parts:
                continue
            if member.endswith("/") and len(parts) == 2:  # a character folder, maybe empty
                classes.setdefault((parts[0], parts[1]), [])
            elif len(parts) == 3 and is_image_name(member):
                classes.setdefault((parts[0], parts[1]), []).append(ImageFile(member, str(path)))
    else:
        for alphabet in sorted(p for p in path.iterdir() if p.is_dir()):
            for character in sorted(p for p in alphabet.iterdir() if p.is_dir()):
                files = sorted(f for f in character.iterdir() if is_image_name(f.name))
                classes[(alphabet.name, character.name)] = [ImageFile(str(f)) for f in files]
    if not classes:
        raise UserError(
            f"{path} holds no <Alphabet>/<character>/<png> images; point --data-root at the "
            "folder that holds the unpacked or zipped Omniglot sets"
        )
    for (alphabet, character), files in classes.items():
        if not files:
            raise UserError(
                f"Omniglot class {path}/{alphabet}/{character} has no images; "
                "add its PNGs or remove the empty folder"
            )
    return [(a, c, sorted(f, key=lambda f: f.member)) for (a, c), f in sorted(classes.items())]


def _stamp(path: Path) -> list:
    """Sizes and times of a source: a changed alphabet changes its folder's time."""
    if path.is_file():
        st = path.stat()
        return [path.name, st.st_size, st.st_mtime_ns]
    return [(p.name, p.stat().st_mtime_ns) for p in sorted(path.iterdir())]


def _build(sources: dict[str, Path], image_size: int) -> ImageStore:
    names, groups, counts, files = [], [], [], []
    for name, path in sources.items():
        for alphabet, character, images in _list_classes(name, path):
            names.append(f"{name}/{alphabet}/{character}")
            groups.append(f"{name}/{alphabet}")
            counts.append(len(images))
            files.extend(images)
    images = decode_files(files, DecodeSpec((image_size, image_size), 1, invert=True))
    return ImageStore(images, names, groups, np.asarray(counts), {"sources": list(sources)})


def load_omniglot(
    root: str | Path,
    split: str = "train",
    *,
    image_size: int = 28,
    rotations: bool = False,
    split_scheme: str = "lake",
    val_fraction: float = 0.15,
    seed: int = 0,
) -> FewShotDataset:
    """Split ``split`` of Omniglot under ``root`` (module docstring: layouts and splits)."""
    if split_scheme not in ("lake", "vinyals"):
        raise UserError(f"unknown Omniglot split_scheme '{split_scheme}'; use 'lake' or 'vinyals'")
    root = Path(root).expanduser()
    found = _find_sources(root)
    background = [BACKGROUND] if BACKGROUND in found else [s for s in SMALL if s in found]
    sources = {s: found[s] for s in [*background, EVALUATION] if s in found}
    key = cache_key(
        root=str(root.resolve()),
        sources={s: _stamp(p) for s, p in sources.items()},
        image_size=image_size,
    )
    store = cached_store("omniglot", key, lambda: _build(sources, image_size))
    source_of = [name.split("/", 1)[0] for name in store.class_names]
    if split_scheme == "lake":
        classes = _lake_split(store, source_of, split, val_fraction, seed)
    else:
        classes = _vinyals_split(store, source_of, split)
    return FewShotDataset.from_store(
        store, classes, rotations=(0, 1, 2, 3) if rotations else (0,), name="omniglot", split=split
    )


def _lake_split(
    store: ImageStore, source_of: list[str], split: str, val_fraction: float, seed: int
) -> list[int]:
    if split == "test":
        test = [c for c, s in enumerate(source_of) if s == EVALUATION]
        if not test:
            raise UserError(
                "Lake's test split is images_evaluation, which is not under the data root; "
                "add images_evaluation/ or images_evaluation.zip"
            )
        return test
    train = [c for c, s in enumerate(source_of) if s != EVALUATION]
    if not train:
        raise UserError(
            f"Lake's {split} split comes from images_background, which is not under the data "
            "root; add images_background/ (or its zip, or the _small1/_small2 sets)"
        )
    alphabets = sorted({store.class_groups[c] for c in train})
    if len(alphabets) < 2:
        raise UserError(
            "the validation carve-out takes whole alphabets, but the background set has only "
            f"{len(alphabets)}; add alphabets"
        )
    size = {a: 0 for a in alphabets}
    for c in train:
        size[store.class_groups[c]] += 1
    val_alphabets: set[str] = set()
    val_count = 0
    for i in np.random.default_rng(seed).permutation(len(alphabets)):
        if val_count >= val_fraction * len(train) or len(val_alphabets) == len(alphabets) - 1:
            break
        val_alphabets.add(alphabets[i])
        val_count += size[alphabets[i]]
    in_val = split == "val"
    return [c for c in train if (store.class_groups[c] in val_alphabets) == in_val]


def _vinyals_split(store: ImageStore, source_of: list[str], split: str) -> list[int]:
    counts = {s: source_of.count(s) for s in FULL_COUNTS}
    if counts != FULL_COUNTS:
        raise UserError(
            "Vinyals' split needs the full Omniglot set (images_background: 964 characters, "
            f"images_evaluation: 659), but found {counts}; add the missing set or use "
            "split_scheme='lake'"
        )
    ordered = sorted(
        range(len(store.class_names)),
        key=lambda c: (source_of[c] != BACKGROUND, store.class_names[c]),
    )
    if split == "test":
        return ordered[VINYALS_TRAINVAL:]
    in_val = split == "val"
    return [
        c
        for c in ordered[:VINYALS_TRAINVAL]
        if (store.class_groups[c].split("/", 1)[1] in VINYALS_VAL) == in_val
    ]
