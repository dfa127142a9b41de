"""``load_dataset``: one entry point for every data set, with its options checked up front."""

from __future__ import annotations

import inspect
import types
import typing
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
    check_options(name, options)
    if name not in BUILT_IN and root is None:
        raise UserError(
            f"data set '{name}' is read from your files; pass --data-root DIR (root=...) "
            "pointing at them"
        )
    return DATASETS[name](root, split, **options)


def check_options(name: str, options: dict[str, object], flag: str = "--data-option") -> None:
    """Raise unless every option is a keyword of data set ``name``'s loader with a value of the
    type it declares (booleans: true or false only, so that ``rotations=no`` is not on)."""
    if name not in DATASETS:
        raise UserError(f"unknown data set '{name}'; choose from {', '.join(DATASETS)}")
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
    hints = typing.get_type_hints(loader)
    for key, value in options.items():
        if not _matches(value, hints[key]):
            raise UserError(f"{flag} {key}={value!r} of data set '{name}' needs "
                            f"{_describe(hints[key])}")


def _matches(value: object, hint: object) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is tuple:
        items = args[:1] * len(value) if args[-1:] == (Ellipsis,) else args
        return (isinstance(value, (list, tuple)) and len(value) == len(items)
                and all(_matches(v, a) for v, a in zip(value, items)))
    if hint is type(None):
        return value is None
    if hint is bool or isinstance(value, bool):
        return hint is bool and isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float))
    if hint is Path:
        return isinstance(value, str)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: object) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is tuple:
        count = "" if args[-1:] == (Ellipsis,) else f"{len(args)} "
        return f"a list of {count}{_describe(args[0]).split(' ', 1)[1]}s"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, f"a {getattr(hint, '__name__', hint)}")
