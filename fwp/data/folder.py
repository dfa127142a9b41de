"""Any image-folder data set: ``<root>/<class>/<image>`` (png, jpg, ...).

With ``train/``, ``val/`` and ``test/`` subfolders (``<root>/<split>/<class>/<image>``) those
are the splits; otherwise classes are split at random by ``seed`` in ``split_fractions``
(train, val, test).
Every image is resized to ``image_size`` (an int for square, or (H, W); by default the size of the
first image) with ``channels`` 1 or 3 (by default 1 if the first image is grayscale, else 3).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fwp.data.cache import ImageStore, cache_key, cached_store
from fwp.data.dataset import FewShotDataset
from fwp.data.images import DecodeSpec, ImageFile, decode_files, image_mode, is_image_name
from fwp.errors import UserError

SPLITS = ("train", "val", "test")
EXPECTED = "<root>/<class>/<image> or <root>/{train,val,test}/<class>/<image>"


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_folder(
    root: str | Path,
    split: str = "train",
    *,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    split_fractions: tuple[float, float, float] = (0.64, 0.16, 0.20),
    seed: int = 0,
) -> FewShotDataset:
    """Split ``split`` of the image folder ``root`` (see the module docstring)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        state = "is a file, not a folder" if root.exists() else "does not exist"
        raise UserError(f"image folder {root} {state}; pass --data-root DIR laid out as {EXPECTED}")
    has_split_folders = any((root / s).is_dir() for s in SPLITS)
    if has_split_folders:
        if not (root / split).is_dir():
            present = [s for s in SPLITS if (root / s).is_dir()]
            raise UserError(
                f"{root} has split folders {present} but no '{split}/'; add it or choose "
                f"--split from {present}"
            )
        folder = root / split
    else:
        folder = root
    class_dirs = _class_folders(folder)
    if not class_dirs:
        found = sorted(p.name for p in folder.iterdir())[:12]
        raise UserError(
            f"no class folders in {folder}: expected {EXPECTED}; found {found or 'nothing'}"
        )
    if channels not in (None, 1, 3):
        raise UserError(f"channels must be 1 or 3, got {channels}")
    key = cache_key(
        folder=str(folder.resolve()),
        stamps=[(p.name, p.stat().st_mtime_ns) for p in class_dirs],
        image_size=image_size,
        channels=channels,
    )
    store = cached_store("folder", key, lambda: _build(class_dirs, image_size, channels))
    classes = np.arange(len(store.class_names))
    if not has_split_folders:
        classes = _seeded_split(len(classes), split, split_fractions, seed, folder)
    return FewShotDataset.from_store(store, classes, name="folder", split=split)


def _seeded_split(
    n: int, split: str, fractions: tuple[float, float, float], seed: int, folder: Path
) -> np.ndarray:
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise UserError(f"split_fractions must be three non-negative numbers, got {fractions}")
    bounds = np.round(np.cumsum(fractions) / sum(fractions) * n).astype(int)
    start = 0 if split == "train" else bounds[SPLITS.index(split) - 1]
    chosen = np.sort(
        np.random.default_rng(seed).permutation(n)[start : bounds[SPLITS.index(split)]]
    )
    if len(chosen) == 0:
        raise UserError(
            f"the seeded split of the {n} classes of {folder} leaves '{split}' empty; add "
            "classes, change split_fractions, or make train/ val/ test/ folders"
        )
    return chosen


def _check_typical(files: list[ImageFile], first_size: tuple[int, int]) -> None:
    """Refuse a default size (the first image's) far above the set's typical size, the median
    of up to 64 sampled headers: every image would be decoded at it."""
    sample = files[:: max(1, len(files) // 64)]
    sizes = [image_mode(Path(f.member))[0] for f in sample]
    typical = sorted(sizes, key=lambda hw: hw[0] * hw[1])[len(sizes) // 2]
    if first_size[0] * first_size[1] > 16 * typical[0] * typical[1]:
        raise UserError(
            f"the first image {files[0]} is {first_size[0]}×{first_size[1]}, far larger than "
            f"the set's typical {typical[0]}×{typical[1]}, and sets every image's size by "
            f"default: pass --data-option image_size={max(typical)} (or resize that file)"
        )


def _build(
    class_dirs: list[Path], image_size: int | tuple[int, int] | None, channels: int | None
) -> ImageStore:
    files, counts = [], []
    for d in class_dirs:
        images = sorted(f for f in d.iterdir() if f.is_file() and is_image_name(f.name))
        if not images:
            raise UserError(
                f"class folder {d} has no images (png/jpg/jpeg/bmp/gif/webp); add images or "
                "remove the folder"
            )
        files.extend(ImageFile(str(f)) for f in images)
        counts.append(len(images))
    first_size, first_channels = image_mode(Path(files[0].member))
    if image_size is None:
        size = first_size
        _check_typical(files, first_size)
    elif isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = (int(image_size[0]), int(image_size[1]))
    spec = DecodeSpec(size, channels or first_channels)
    names = [d.name for d in class_dirs]
    return ImageStore(decode_files(files, spec), names, names, np.asarray(counts), {})
