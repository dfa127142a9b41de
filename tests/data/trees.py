"""Writers of fixture trees in the layouts users have: Omniglot as in Lake et al.'s repository
(``images_background/<Alphabet>/<character>/``), Mini-ImageNet as the pickled caches, as the
HDF5 files the public SRWM code makes of them, or as Ravi & Larochelle's CSV files beside
``images/``."""

from __future__ import annotations

import csv
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def ink_png(path: Path, size: int, mark: int) -> None:
    """A binary Omniglot-style PNG: white page, a black ink square whose place encodes ``mark``."""
    page = np.full((size, size), 255, np.uint8)
    y, x = divmod(mark % 16, 4)
    cell = size // 4
    page[y * cell : (y + 1) * cell, x * cell : (x + 1) * cell] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(page).convert("1").save(path)


def make_omniglot(
    root: Path, source: str, alphabets: dict[str, int], drawers: int = 3, size: int = 8
) -> Path:
    """``root/source/<Alphabet>/characterNN/<id>_<drawer>.png``."""
    mark = 0
    for alphabet, characters in alphabets.items():
        for c in range(1, characters + 1):
            for d in range(1, drawers + 1):
                ink_png(
                    root / source / alphabet / f"character{c:02d}" / f"{c:04d}_{d:02d}.png",
                    size,
                    mark,
                )
                mark += 1
    return root / source


def zip_folder(folder: Path, zip_path: Path) -> None:
    """Zip ``folder`` the way the Omniglot release does (top folder included)."""
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, path.relative_to(folder.parent).as_posix())


def make_miniimagenet_pickle(
    root: Path, split: str, classes: int, per_class: int, size: int = 84
) -> None:
    rng = np.random.default_rng(len(split))
    n = classes * per_class
    data = {
        "image_data": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        # Interleaved indices: the loader must regroup images by class.
        "class_dict": {f"n{c:08d}": list(range(c, n, classes)) for c in range(classes)},
    }
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
        pickle.dump(data, f)


def make_miniimagenet_hdf5(root: Path, split: str, classes: int, per_class: int,
                           size: int = 84) -> np.ndarray:
    """torchmeta's layout, as the public SRWM code leaves it: ``{split}_data.hdf5`` (group
    ``datasets``, one data set per class) and ``{split}_labels.json``. Returns the images
    ``[classes, per_class, size, size, 3]`` in label order."""
    import h5py

    rng = np.random.default_rng(len(split))
    images = rng.integers(0, 256, (classes, per_class, size, size, 3), dtype=np.uint8)
    names = [f"n{c:08d}" for c in range(classes)]
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / f"{split}_data.hdf5", "w") as f:
        group = f.create_group("datasets")
        for c in reversed(range(classes)):  # stored out of order: the labels file gives it
            group.create_dataset(names[c], data=images[c])
    (root / f"{split}_labels.json").write_text(json.dumps(names))
    return images


def make_csv_layout(root: Path, split: str, classes: int, per_class: int, size: int = 12) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    with open(root / f"{split}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "label"])
        for c in range(classes):
            for i in range(per_class):
                name = f"{split}{c:02d}{i:03d}.jpg"
                color = (c * 40 % 256, i * 30 % 256, 128)
                Image.new("RGB", (size, size), color).save(root / "images" / name)
                writer.writerow([name, f"n{split}{c:04d}"])


def make_folder(root: Path, classes: int, per_class: int, size: int = 10) -> Path:
    for c in range(classes):
        for i in range(per_class):
            path = root / f"class{c:02d}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (size, size), (c * 16 + i) % 256).save(path)
    return root
