"""The state of every random generator a training process draws from, to save and restore.

The global numpy and Python generators are saved beside torch's (and CUDA's): data code a user
plugs in may draw from them. The state is kept in plain types (tensors, numbers, lists), so that
a checkpoint holding it loads with ``weights_only=True``; states saved by older fwp versions
(numpy's tuple with an array) are read as well.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """``{"torch", "numpy", "python"[, "cuda"]}`` of this process."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "cached_gaussian": cached},
        "python": [version, list(internal), gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (or an older fwp version saved)."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        keys = np.asarray(numpy_state["keys"], dtype=np.int64).astype(np.uint32)
        numpy_state = (numpy_state["kind"], keys, numpy_state["pos"],
                       numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(tuple(numpy_state))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
