"""Layers by name, so that a model is a list of names (``["srwm", "srwm", "deltanet"]``).

Every registered layer is an ``nn.Module`` built as ``cls(d_model, n_heads, **options)`` with
``forward(x [B, T, d_model], state=None) -> (y [B, T, d_model], new_state)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from fwp.errors import UserError

LAYERS: dict[str, type[nn.Module]] = {}


def register_layer(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a layer to :data:`LAYERS` under ``name``."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in LAYERS and LAYERS[name] is not cls:
            raise ValueError(f"layer name {name!r} is taken by {LAYERS[name].__name__}")
        LAYERS[name] = cls
        return cls

    return add


def layer_option_names(name: str) -> tuple[str, ...] | None:
    """The keyword options of layer ``name``'s constructor (None: it takes any)."""
    params = list(inspect.signature(LAYERS[name]).parameters.values())[2:]  # d_model, n_heads
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def check_layer_options(name: str, options: dict[str, Any], flag: str = "--layer-option"
                        ) -> None:
    """Raise :class:`UserError` for an option that layer ``name``'s constructor does not take
    (before any work: the layer is built only later)."""
    if name not in LAYERS:
        raise UserError(f"unknown layer {name!r}; choose one of {', '.join(sorted(LAYERS))}")
    known = layer_option_names(name)
    unknown = [key for key in options if known is not None and key not in known]
    if unknown:
        raise UserError(f"{flag} {unknown[0]}: layer {name} takes no option {unknown[0]!r}; its "
                        f"options: {', '.join(known) or 'none'}")


def build_layer(name: str, d_model: int, n_heads: int, **options: object) -> nn.Module:
    if name not in LAYERS:
        raise UserError(f"unknown layer {name!r}; choose one of {sorted(LAYERS)}")
    try:
        return LAYERS[name](d_model, n_heads, **options)
    except TypeError as error:
        raise UserError(f"bad options for layer {name!r}: {error}") from error
