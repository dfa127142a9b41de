"""Mini-ImageNet (Vinyals et al. 2016; Ravi & Larochelle 2017 split) from the files a user has.

Any of three layouts, per split, under one root:

- the pickles ``mini-imagenet-cache-{train,val,test}.pkl``: a dict with ``image_data`` (uint8
  ``[n, 84, 84, 3]``) and ``class_dict`` (class -> list of indices into ``image_data``);
- what the public few-shot SRWM code (IDSIA/modern-srwm, through its copy of torchmeta's
  ``MiniImagenet``) makes of those pickles, then deletes them: ``{split}_data.hdf5`` with one
  uint8 ``[n, 84, 84, 3]`` data set per class in its group ``datasets``, and
  ``{split}_labels.json``, the sorted class names; in ``root`` or in ``root/miniimagenet/``
  (that code's ``--data_dir``). Needs ``h5py`` (the ``hdf5`` extra);
- Ravi & Larochelle's ``{train,val,test}.csv`` (columns ``filename,label``) with an ``images/``
  folder.

64 / 16 / 20 classes of 600 images; ``image_size`` x ``image_size`` x 3 (84 by default).
"""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np

from fwp.data.cache import ImageStore, cache_key, cached_store, file_stamp
from fwp.data.dataset import FewShotDataset
from fwp.data.images import DecodeSpec, ImageFile, decode_files
from fwp.errors import UserError


def load_miniimagenet(
    root: str | Path, split: str = "train", *, image_size: int = 84
) -> FewShotDataset:
    """Split ``split`` of Mini-ImageNet under ``root`` (pickle, HDF5 or CSV layout)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(
            f"Mini-ImageNet root {root} is not a folder; pass --data-root DIR, the folder that "
            "holds mini-imagenet-cache-{train,val,test}.pkl or train.csv/val.csv/test.csv + images/"
        )
    pickle_path = root / f"mini-imagenet-cache-{split}.pkl"
    csv_path = root / f"{split}.csv"
    hdf5_path = next((folder / f"{split}_data.hdf5" for folder in (root, root / "miniimagenet")
                      if (folder / f"{split}_data.hdf5").is_file()), None)
    if hdf5_path is not None:
        labels_path = hdf5_path.with_name(f"{split}_labels.json")
        sources = [p.resolve() for p in (hdf5_path, labels_path) if p.is_file()]
        key = cache_key(source=file_stamp(sources), image_size=image_size)
        store = cached_store("miniimagenet", key,
                             lambda: _from_hdf5(hdf5_path, labels_path, image_size))
    elif pickle_path.is_file():
        key = cache_key(source=file_stamp([pickle_path.resolve()]), image_size=image_size)
        store = cached_store("miniimagenet", key, lambda: _from_pickle(pickle_path, image_size))
    elif csv_path.is_file() and (root / "images").is_dir():
        key = cache_key(
            source=file_stamp([csv_path.resolve(), (root / "images").resolve()]),
            image_size=image_size,
        )
        store = cached_store("miniimagenet", key, lambda: _from_csv(csv_path, root, image_size))
    else:
        found = sorted(p.name for p in root.iterdir())[:12]
        raise UserError(
            f"no Mini-ImageNet '{split}' split in {root}: expected {pickle_path.name}, "
            f"{split}_data.hdf5 (the public SRWM code's, also under miniimagenet/), or "
            f"{csv_path.name} with an images/ folder (Ravi & Larochelle); "
            f"found {found or 'nothing'}"
        )
    return FewShotDataset.from_store(
        store, range(len(store.class_names)), name="miniimagenet", split=split
    )


# What a Mini-ImageNet cache pickle holds: numpy arrays in dicts and lists. Any other global a
# pickle names would be called while loading (a pickle can run code), so it is refused.
ARRAY_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("collections", "OrderedDict"),
    *((f"numpy{core}.multiarray", name) for core in ("._core", ".core")
      for name in ("_reconstruct", "scalar")),
    *((f"numpy{core}.numeric", "_frombuffer") for core in ("._core", ".core")),
}


class ArrayUnpickler(pickle.Unpickler):
    """Loads numpy arrays, numbers, strings and containers; refuses every other global."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in ARRAY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"it names {module}.{name}, which a Mini-ImageNet cache never holds and which "
            "would run while loading"
        )


def _from_pickle(path: Path, image_size: int) -> ImageStore:
    try:
        with path.open("rb") as f:
            data = ArrayUnpickler(f).load()
        images, class_dict = np.asarray(data["image_data"]), data["class_dict"]
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError) as error:
        raise UserError(
            f"cannot read {path} as a Mini-ImageNet cache pickle (a dict with 'image_data' and "
            f"'class_dict'): {error!r}; re-download or regenerate the file"
        ) from error
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise UserError(
            f"{path}: 'image_data' should be uint8 [n, H, W, 3], got {images.dtype} "
            f"{list(images.shape)}; re-download or regenerate the file"
        )
    names = sorted(class_dict)
    for name in names:
        if len(class_dict[name]) == 0:
            raise UserError(f"class '{name}' of {path} has no images; regenerate the file")
    order = np.concatenate([np.asarray(class_dict[n], dtype=np.int64) for n in names])
    images = images[order]
    if images.shape[1:3] != (image_size, image_size):
        images = _resize(images, image_size)
    counts = np.asarray([len(class_dict[n]) for n in names])
    return ImageStore(images, names, names, counts, {"source": str(path)})


def _from_hdf5(path: Path, labels_path: Path, image_size: int) -> ImageStore:
    """torchmeta's layout: group ``datasets`` of ``path``, one data set per class, in the order
    of ``labels_path`` (its sorted names; sorted keys when the file is absent)."""
    try:
        import h5py
    except ImportError:
        raise UserError(f"reading {path} needs h5py: pip install h5py (or the fwp[hdf5] "
                        "extra)") from None
    try:
        with h5py.File(path, "r") as f:
            group = f["datasets"]
            names = (json.loads(labels_path.read_text()) if labels_path.is_file()
                     else sorted(group))
            absent = [n for n in names if n not in group]
            if absent:
                raise UserError(f"{labels_path.name} lists classes that {path} does not hold: "
                                f"{', '.join(absent[:5])}; regenerate both files")
            per_class = [np.asarray(group[n]) for n in names]
    except (OSError, KeyError, ValueError) as error:
        raise UserError(
            f"cannot read {path} as a Mini-ImageNet HDF5 file (a group 'datasets' with one "
            f"data set per class): {error}; regenerate it from the pickles"
        ) from None
    for name, images in zip(names, per_class):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or not len(
                images):
            raise UserError(f"{path}: class '{name}' should be uint8 [n ≥ 1, H, W, 3], got "
                            f"{images.dtype} {list(images.shape)}; regenerate the file")
    images = np.concatenate(per_class)
    if images.shape[1:3] != (image_size, image_size):
        images = _resize(images, image_size)
    counts = np.asarray([len(c) for c in per_class])
    return ImageStore(images, names, names, counts, {"source": str(path)})


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.stack(
        [
            np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.LANCZOS))
            for im in images
        ]
    )


def _from_csv(csv_path: Path, root: Path, image_size: int) -> ImageStore:
    by_label: dict[str, list[str]] = {}
    with csv_path.open(newline="") as f:
        rows = csv.DictReader(f)
        if rows.fieldnames is None or not {"filename", "label"} <= set(rows.fieldnames):
            raise UserError(
                f"{csv_path} should have the columns filename,label (Ravi & Larochelle); "
                f"found {rows.fieldnames}"
            )
        for row in rows:
            by_label.setdefault(row["label"], []).append(row["filename"])
    if not by_label:
        raise UserError(f"{csv_path} lists no images; regenerate the file")
    names = sorted(by_label)
    files = []
    for name in names:
        for filename in by_label[name]:
            path = root / "images" / filename
            if not path.is_file():
                raise UserError(
                    f"{csv_path.name} lists {filename} (class {name}) but {path} does not exist; "
                    "restore the image or remove its row"
                )
            files.append(ImageFile(str(path)))
    images = decode_files(files, DecodeSpec((image_size, image_size), 3))
    counts = np.asarray([len(by_label[n]) for n in names])
    return ImageStore(images, names, names, counts, {"source": str(csv_path)})
