"""Checkpoint files that are safe to load: tensors, numbers, strings and containers only.

``torch.load(weights_only=True)`` unpickles nothing else, so a checkpoint cannot carry code
that runs when it is loaded (a plain pickle can). Everything fwp saves is made of those types
(:func:`plain` converts the few others: numpy arrays and scalars, tuples, ``torch.__version__``).
Checkpoints written before this rule also hold the numpy arrays of the RNG state and a torch
version string; those few types (arrays of plain numbers, not objects) are allowed when a file
is read, so older run folders still load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fwp.config import write_atomic
from fwp.errors import UserError, brief


def plain(value: Any) -> Any:
    """``value`` with numpy arrays as tensors, numpy scalars as Python numbers, tuples as lists
    and str subclasses as ``str``: what ``weights_only`` loading accepts without exceptions."""
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str) and type(value) is not str:
        return str(value)
    return value


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (made :func:`plain`) atomically to ``path``."""
    write_atomic(path, plain(state))


def _legacy_types() -> list:
    """What checkpoints of older fwp versions hold besides the plain types: numpy's RNG state
    (an array of uint32) and ``torch.__version__``."""
    from torch.torch_version import TorchVersion

    core = getattr(np, "_core", None) or np.core
    types = [core.multiarray._reconstruct, np.ndarray, np.dtype, TorchVersion]
    types += [type(np.dtype(kind)) for kind in ("uint32", "int64", "float64")]
    return types


def load_checkpoint(path: Path, fix: str = "restore it, or train the run again into a new "
                    "--out") -> dict[str, Any]:
    """A checkpoint dict, loaded with ``weights_only=True``; a missing, damaged or foreign file
    (one that would need anything else to unpickle) raises :class:`UserError` naming ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint {path}; train (or resume) the run first")
    try:
        with torch.serialization.safe_globals(_legacy_types()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 — any unreadable file is the same user problem
        reason = brief(error)
        if "Unsupported global" in str(error) or "weights_only" in str(error):
            reason = ("it holds Python objects other than tensors, numbers, strings and "
                      "containers, which fwp never writes and will not run")
        raise UserError(f"cannot read {path} ({reason}): the file is damaged or not a "
                        f"checkpoint of fwp; {fix}") from None
    if not (isinstance(state, dict) and isinstance(state.get("model"), dict)
            and isinstance(state.get("step"), int)):
        raise UserError(f"{path} is a torch file but not a checkpoint of fwp (no model and "
                        f"step); {fix}")
    return state
