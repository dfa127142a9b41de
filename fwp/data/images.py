"""Decoding image files (plain or inside a zip) into uint8 arrays, in parallel when many."""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fwp.errors import UserError, brief

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F", "P;L")


@dataclass(frozen=True)
class ImageFile:
    """An image file: ``member`` of zip ``archive``, or the plain file ``member`` if no archive."""

    member: str
    archive: str | None = None

    def __str__(self) -> str:
        return f"{self.archive}:{self.member}" if self.archive else self.member


@dataclass(frozen=True)
class DecodeSpec:
    """How every image becomes an array: size (H, W), channels (1 or 3), ink inverted or not."""

    size: tuple[int, int]
    channels: int
    invert: bool = False


# What a truncated or corrupt zip raises: a bad directory or header, a bad CRC, cut-off data.
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)


def _broken_zip(path: str | Path, error: Exception, member: str | None = None) -> UserError:
    where = f"{member} in {path}" if member else str(path)
    return UserError(
        f"cannot read {where} ({brief(error)}): the zip file is truncated or "
        f"corrupt; download it again (or unpack it and pass the folder instead)"
    )


def open_zip(path: str | Path) -> zipfile.ZipFile:
    """``zipfile.ZipFile(path)``; a truncated or corrupt file raises ``UserError`` naming it."""
    try:
        return zipfile.ZipFile(path)
    except ZIP_ERRORS as error:
        raise _broken_zip(path, error) from None


def read_member(archive: zipfile.ZipFile, member: str) -> bytes:
    """The bytes of ``member``; damaged data (bad CRC, cut short) raises ``UserError``."""
    try:
        return archive.read(member)
    except ZIP_ERRORS as error:
        raise _broken_zip(archive.filename, error, member) from None


def _pil_errors() -> tuple[type[Exception], ...]:
    from PIL import Image

    # A decompression bomb: a small file whose header claims more pixels than PIL's limit
    # (Image.MAX_IMAGE_PIXELS; twice that is an error, above it a warning made one here).
    return (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning)


@contextlib.contextmanager
def _bombs_refused() -> Iterator[None]:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def unreadable(name: str, error: Exception) -> UserError:
    """The one line for an image file PIL cannot (or should not) decode."""
    if "decompression bomb" in str(error):
        return UserError(f"image {name} is too large to decode ({brief(error)}); replace it "
                         "with a smaller copy or delete it")
    return UserError(f"cannot read image {name} ({error}); replace or delete the file")


def decode(data: bytes | str, spec: DecodeSpec, name: str) -> np.ndarray:
    """One image -> uint8 ``[H, W, C]``; a file PIL cannot read raises ``UserError`` naming it."""
    from PIL import Image, ImageOps

    try:
        with _bombs_refused(), Image.open(
            io.BytesIO(data) if isinstance(data, bytes) else data
        ) as image:
            image = image.convert("L" if spec.channels == 1 else "RGB")
    except _pil_errors() as error:  # evaluated only on an error
        raise unreadable(name, error) from None
    if spec.invert:
        image = ImageOps.invert(image)
    h, w = spec.size
    if image.size != (w, h):
        image = image.resize((w, h), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def _decode_chunk(files: Sequence[ImageFile], spec: DecodeSpec) -> np.ndarray:
    out = np.empty((len(files), *spec.size, spec.channels), np.uint8)
    archives: dict[str, zipfile.ZipFile] = {}
    try:
        for i, f in enumerate(files):
            if f.archive is None:
                out[i] = decode(f.member, spec, str(f))
            else:
                if f.archive not in archives:
                    archives[f.archive] = open_zip(f.archive)
                out[i] = decode(read_member(archives[f.archive], f.member), spec, str(f))
    finally:
        for archive in archives.values():
            archive.close()
    return out


def decode_files(
    files: Sequence[ImageFile], spec: DecodeSpec, *, parallel_from: int = 2000
) -> np.ndarray:
    """uint8 ``[len(files), H, W, C]``, on every core from ``parallel_from`` files on."""
    check_fits(len(files), spec)
    workers = os.cpu_count() or 1
    if len(files) < parallel_from or workers == 1:
        return _decode_chunk(files, spec)
    chunk = max(64, len(files) // (8 * workers))
    chunks = [files[i : i + chunk] for i in range(0, len(files), chunk)]
    with process_pool(workers) as pool:
        parts = pool.starmap(_decode_chunk, [(c, spec) for c in chunks])
    return np.concatenate(parts)


def check_fits(count: int, spec: DecodeSpec) -> None:
    """Raise before decoding if ``count`` images of ``spec`` would not fit in half of this
    machine's memory (the decoded array is held whole while the cache is written)."""
    h, w = spec.size
    need = count * h * w * spec.channels
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > memory // 2:
        raise UserError(
            f"{count} images of {h}×{w}×{spec.channels} would take {need / 2**30:,.1f} GiB "
            f"decoded, more than half of this machine's {memory / 2**30:.0f} GiB of memory; "
            "pass a smaller --data-option image_size=N"
        )


def process_pool(workers: int) -> multiprocessing.pool.Pool:
    """A worker pool; ``fork`` where available (no re-import of torch per worker)."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return context.Pool(workers)


def image_mode(path: Path | ImageFile) -> tuple[tuple[int, int], int]:
    """((H, W), channels) of an image, reading only its header."""
    from PIL import Image

    name = str(path)
    if isinstance(path, ImageFile) and path.archive:
        with open_zip(path.archive) as archive:
            source: io.BytesIO | str | Path = io.BytesIO(read_member(archive, path.member))
    else:
        source = path.member if isinstance(path, ImageFile) else path
    try:
        with _bombs_refused(), Image.open(source) as image:
            size, mode = image.size, image.mode
    except _pil_errors() as error:  # evaluated only on an error
        raise unreadable(name, error) from None
    return (size[1], size[0]), 1 if mode in GRAY_MODES else 3


def is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_SUFFIXES)
