"""The on-disk image cache: every data set is decoded once into ``images.npy`` + ``meta.json``.

Layout: ``$FWP_CACHE/<kind>/<key>/`` (``~/.cache/fwp`` when ``FWP_CACHE`` is unset), where the key
hashes everything the decoded images depend on (source files' sizes and times, image size, format
version). Images are stored class by class, so class ``c`` is the contiguous run
``images[start_c : start_c + count_c]``; later runs memory-map the array and start in well under a
second.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fwp.errors import UserError

FORMAT_VERSION = 1


def cache_dir() -> Path:
    """The cache root: ``$FWP_CACHE`` if set, else ``~/.cache/fwp``."""
    return Path(os.environ.get("FWP_CACHE") or "~/.cache/fwp").expanduser()


def cache_key(**parts: object) -> str:
    """A short stable hash of ``parts`` (anything JSON can write)."""
    text = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class ImageStore:
    """All images of one source, class by class.

    images: uint8 ``[n, H, W, C]``; class ``c`` owns ``images[starts[c] : starts[c] + counts[c]]``.
    ``groups[c]`` is the class's alphabet / script / source folder, which splits are made by.
    """

    images: np.ndarray
    class_names: list[str]
    class_groups: list[str]
    class_counts: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def class_starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.class_counts)[:-1]]).astype(np.int64)


def _load(path: Path) -> ImageStore | None:
    """The entry at ``path``; None if it is missing, of another format, or damaged (a cut-off
    array, unreadable or incomplete meta data, counts that do not add up)."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        images = np.load(path / "images.npy", mmap_mode="r")
        counts = np.asarray(meta["class_counts"], dtype=np.int64)
        store = ImageStore(images, list(meta["class_names"]), list(meta["class_groups"]), counts,
                           dict(meta["info"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    names, groups = store.class_names, store.class_groups
    if (meta.get("format") != FORMAT_VERSION or images.dtype != np.uint8 or images.ndim != 4
            or counts.ndim != 1 or counts.min(initial=0) < 0 or counts.sum() != len(images)
            or len(names) != len(counts) or len(groups) != len(counts)):
        return None
    return store


def write_entry(path: Path, fill: Callable[[Path], None], what: str = "data cache") -> None:
    """Write the cache entry ``path`` whole or not at all: ``fill(tmp)`` writes it into a
    private folder beside it, which is then renamed to ``path`` (a concurrent builder that got
    there first wins). An OSError becomes one line naming the ``what`` and ``FWP_CACHE``."""
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        fill(tmp)
        try:
            tmp.rename(path)
        except OSError:
            if not (path / "meta.json").exists():  # not a concurrent builder winning the race
                raise
    except OSError as error:
        raise UserError(
            f"cannot write the {what} at {path.parent} ({error}); "
            "set FWP_CACHE to a writable folder"
        ) from error
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save(path: Path, store: ImageStore) -> None:
    def fill(tmp: Path) -> None:
        np.save(tmp / "images.npy", np.ascontiguousarray(store.images, dtype=np.uint8))
        meta = {
            "format": FORMAT_VERSION,
            "class_names": list(store.class_names),
            "class_groups": list(store.class_groups),
            "class_counts": [int(c) for c in store.class_counts],
            "info": store.info,
        }
        (tmp / "meta.json").write_text(json.dumps(meta))

    write_entry(path, fill)


def cached_store(kind: str, key: str, build: Callable[[], ImageStore]) -> ImageStore:
    """The store of ``kind``/``key`` from the cache, built with ``build()`` and saved on a miss."""
    path = cache_dir() / kind / key
    store = _load(path)
    if store is None:
        if path.is_dir() or path.is_file():  # a damaged entry: rebuilt from the sources
            _remove(path)
        _save(path, build())
        store = _load(path)
        assert store is not None, f"cache entry {path} unreadable right after writing it"
    return store


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:  # a concurrent run removed it first
        pass
    except OSError as error:
        raise UserError(
            f"the data cache entry {path} is damaged and cannot be removed ({error.strerror}); "
            "delete it, or set FWP_CACHE to a writable folder"
        ) from None


def file_stamp(paths: Sequence[Path]) -> list[tuple[str, int, int]]:
    """(name, size, mtime in ns) of each path: enough to notice a changed source."""
    stamps = []
    for p in paths:
        st = p.stat()
        stamps.append((str(p), st.st_size, st.st_mtime_ns))
    return stamps
