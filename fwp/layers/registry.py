"""Layers by name, so that a model is a list of names (``["srwm", "srwm", "deltanet"]``).

Every registered layer is an ``nn.Module`` built as ``cls(d_model, n_heads, **options)`` with
``forward(x [B, T, d_model], state=None) -> (y [B, T, d_model], new_state)``.
"""

from __future__ import annotations

from collections.abc import Callable

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


def build_layer(name: str, d_model: int, n_heads: int, **options: object) -> nn.Module:
    if name not in LAYERS:
        raise UserError(f"unknown layer {name!r}; choose one of {sorted(LAYERS)}")
    try:
        return LAYERS[name](d_model, n_heads, **options)
    except TypeError as error:
        raise UserError(f"bad options for layer {name!r}: {error}") from error
