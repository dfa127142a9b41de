"""``FewShotDataset``: the images of one split, grouped by class."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fwp.data.cache import ImageStore
from fwp.errors import UserError


class FewShotDataset(torch.utils.data.Dataset):
    """The classes of one split of a data set, over a compact uint8 image array.

    ``images`` is uint8 ``[n, H, W, C]`` (usually memory-mapped from the cache and shared by the
    splits of one source); class ``c`` of this split is the contiguous run
    ``images[class_starts[c] : class_starts[c] + class_counts[c]]``, seen rotated by
    ``class_rotations[c] * 90`` degrees (Omniglot's rotated classes; 0 otherwise).

    Float images come from :meth:`gather` as ``[..., C, H, W]`` float32 in ``[0, 1]``
    (``uint8 / 255``, no standardisation; for the ink data sets ``omniglot`` and ``glyphs`` ink is 1
    on a 0 background). As a map-style ``torch`` data set, item ``i`` is ``(image, class)``.
    """

    def __init__(
        self,
        images: np.ndarray,
        class_names: Sequence[str],
        class_starts: np.ndarray,
        class_counts: np.ndarray,
        *,
        class_groups: Sequence[str] | None = None,
        class_rotations: np.ndarray | None = None,
        name: str = "",
        split: str = "",
    ) -> None:
        self.images = images
        self.class_names = list(class_names)
        self.class_starts = np.asarray(class_starts, dtype=np.int64)
        self.class_counts = np.asarray(class_counts, dtype=np.int64)
        self.class_groups = (
            list(class_groups) if class_groups is not None else [""] * len(self.class_names)
        )
        rotations = (
            np.zeros(len(self.class_names), np.int64)
            if class_rotations is None
            else (np.asarray(class_rotations, dtype=np.int64))
        )
        self.class_rotations = rotations
        self.name = name
        self.split = split
        self._item_offsets = np.concatenate([[0], np.cumsum(self.class_counts)])

    @classmethod
    def from_store(
        cls,
        store: ImageStore,
        classes: Sequence[int],
        *,
        rotations: Sequence[int] = (0,),
        name: str = "",
        split: str = "",
    ) -> FewShotDataset:
        """The split made of store classes ``classes``, each once per rotation in ``rotations``."""
        classes = np.asarray(classes, dtype=np.int64)
        rot = np.repeat(np.asarray(rotations, dtype=np.int64), len(classes))
        cls_ids = np.tile(classes, len(rotations))
        names = [
            store.class_names[c] + (f"/rot{r * 90:03d}" if len(rotations) > 1 else "")
            for c, r in zip(cls_ids, rot)
        ]
        return cls(
            store.images,
            names,
            store.class_starts[cls_ids],
            store.class_counts[cls_ids],
            class_groups=[store.class_groups[c] for c in cls_ids],
            class_rotations=rot,
            name=name,
            split=split,
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_images(self) -> int:
        """Images of this split (a rotated class counts its images again)."""
        return int(self.class_counts.sum())

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the float images."""
        _, h, w, c = self.images.shape
        return (c, h, w)

    def gather_uint8(self, classes: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """uint8 ``[..., H, W, C]``: image ``positions`` of class ``classes`` (same shapes)."""
        classes = np.asarray(classes, dtype=np.int64)
        positions = np.asarray(positions, dtype=np.int64)
        shape = np.broadcast_shapes(classes.shape, positions.shape)
        classes, positions = np.broadcast_to(classes, shape), np.broadcast_to(positions, shape)
        index = (self.class_starts[classes] + positions).reshape(-1)
        # Sorted reads are much faster on a memory map; the inverse restores the order.
        order = np.argsort(index, kind="stable")
        out = np.empty((len(index), *self.images.shape[1:]), np.uint8)
        out[order] = self.images[index[order]]
        rotations = self.class_rotations[classes].reshape(-1)
        for k in (1, 2, 3):
            turned = rotations == k
            if turned.any():
                out[turned] = np.rot90(out[turned], k, axes=(1, 2))
        return out.reshape(*shape, *self.images.shape[1:])

    def gather(self, classes: np.ndarray, positions: np.ndarray) -> torch.Tensor:
        """float32 ``[..., C, H, W]`` in [0, 1]: image ``positions`` of class ``classes``."""
        return to_float(self.gather_uint8(classes, positions))

    def class_images(self, c: int) -> torch.Tensor:
        """All images of class ``c`` as float32 ``[count, C, H, W]``."""
        return self.gather(np.full(self.class_counts[c], c), np.arange(self.class_counts[c]))

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"image {i} out of range for {len(self)} images")
        c = int(np.searchsorted(self._item_offsets, i, side="right") - 1)
        return self.gather(np.array(c), np.array(i - self._item_offsets[c])), c

    def describe(self) -> str:
        """One line: classes, images, image shape."""
        counts = self.class_counts
        per_class = (
            f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"
        )
        c, h, w = self.image_shape
        return (
            f"{self.num_classes} classes, {self.num_images} images ({per_class} per class), "
            f"{h}x{w}x{c}"
        )

    def check_episode(self, n_way: int, images_per_class: int) -> None:
        """Raise ``UserError`` unless an episode of ``n_way`` classes fits this split."""
        where = f"split '{self.split}' of '{self.name}'"
        if n_way > self.num_classes:
            raise UserError(
                f"N = {n_way} classes per episode, but {where} has only {self.num_classes} "
                "classes; lower --n-way or use a larger split"
            )
        smallest = int(np.argmin(self.class_counts))
        if images_per_class > self.class_counts[smallest]:
            raise UserError(
                f"an episode needs K + K' + Q = {images_per_class} distinct images per class, but "
                f"class '{self.class_names[smallest]}' of {where} has only "
                f"{self.class_counts[smallest]}; lower --k-shot / --k-extra / --n-query"
            )


def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[..., H, W, C]`` -> float32 ``[..., C, H, W]`` in [0, 1].

    Done in numpy, single-threaded: torch's threaded kernels stall on small batches when the
    machine's cores are busy (e.g. with DataLoader workers).
    """
    out = np.empty((*images.shape[:-3], images.shape[-1], *images.shape[-3:-1]), np.float32)
    np.multiply(np.moveaxis(images, -1, -3), np.float32(1 / 255), out=out, dtype=np.float32)
    return torch.from_numpy(out)
