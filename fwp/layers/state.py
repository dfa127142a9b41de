"""Helpers for layer states: nested tuples/lists/dicts of tensors (or None).

Every tensor of every layer's state has the batch in its first dimension, so a state can be
repeated or indexed per sequence without knowing the layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state: Any) -> Any:
    """Apply ``fn`` to every tensor of a (nested) state, keeping its structure."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, (list, tuple)):
        return type(state)(map_state(fn, s) for s in state)
    if isinstance(state, dict):
        return {key: map_state(fn, s) for key, s in state.items()}
    raise TypeError(f"a layer state holds tensors, lists, tuples or dicts, not {type(state)}")


def clone_state(state: Any) -> Any:
    """A copy that stays connected to the graph: continue two futures from one state."""
    return map_state(torch.clone, state)


def detach_state(state: Any) -> Any:
    """Cut the graph, e.g. between truncated-BPTT segments or for a teacher branch."""
    return map_state(torch.Tensor.detach, state)


def repeat_state(state: Any, repeats: int) -> Any:
    """Each sequence's state ``repeats`` times in a row along the batch: ``[B, …]`` → ``[B·r, …]``
    (sequence b's copies at b·r … b·r + r − 1), e.g. to continue one state with r queries."""
    return map_state(lambda t: t.repeat_interleave(repeats, dim=0), state)
