"""``load_dataset``: one entry point for every data set, with its options checked up front."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from fwp.data.cluttered_glyphs import load_cluttered_glyphs
from fwp.data.dataset import FewShotDataset
from fwp.data.folder import load_folder
from fwp.data.glyphs import load_glyphs
from fwp.data.miniimagenet import load_miniimagenet
from fwp.data.omniglot import load_omniglot
from fwp.errors import UserError

SPLITS = ("train", "val", "test")
BUILT_IN = ("glyphs", "cluttered_glyphs")  # rendered here, no files to read
DATASETS: dict[str, Callable[..., FewShotDataset]] = {
    "glyphs": load_glyphs,
    "cluttered_glyphs": load_cluttered_glyphs,
    "omniglot": load_omniglot,
    "miniimagenet": load_miniimagenet,
    "folder": load_folder,
}


def load_dataset(
    name: str, root: str | Path | None = None, split: str = "train", **options: object
) -> FewShotDataset:
    """Split ``split`` of data set ``name`` read from ``root``, decoded through the cache.

    ``name``: ``glyphs`` or ``cluttered_glyphs`` (built in, no root), ``omniglot``,
    ``miniimagenet`` or ``folder``; the options are the keyword arguments of
    ``fwp.data.<module>.load_<name>`` (e.g. ``image_size``, ``rotations``, ``split_scheme`` for
    Omniglot).
    """
    root = root or None  # "" (a config default) means no root
    if name not in DATASETS:
        raise UserError(f"unknown data set '{name}'; choose from {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; choose from {', '.join(SPLITS)}")
    loader = DATASETS[name]
    accepted = [
        p.name for p in inspect.signature(loader).parameters.values() if p.kind == p.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(
            f"data set '{name}' has no option {', '.join(unknown)}; its options are "
            f"{', '.join(accepted)}"
        )
    if name not in BUILT_IN and root is None:
        raise UserError(
            f"data set '{name}' is read from your files; pass --data-root DIR (root=...) "
            "pointing at them"
        )
    return loader(root, split, **options)
