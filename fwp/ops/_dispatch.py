"""Choosing an operator's implementation ("mode") for the tensors at hand.

Each operator lists its modes with a check of whether they can run on a given tensor, and a
preference order per device type for ``mode="auto"``. A forced mode that cannot run raises an
error saying why; ``auto`` takes the first mode that can, and warns once when it had to skip a
compiled path it expected (a missing compiler, say).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fwp.errors import UserError


def always(tensor: torch.Tensor) -> tuple[bool, str]:
    return True, ""


def on_cpu(tensor: torch.Tensor) -> tuple[bool, str]:
    """The fused C++ kernels: CPU tensors, once the extension has compiled (cached on disk)."""
    if tensor.device.type != "cpu":
        return False, f"the fused CPU kernels take CPU tensors, not {tensor.device} tensors"
    from fwp.ops import _cpp

    return _cpp.available()


def on_triton(tensor: torch.Tensor) -> tuple[bool, str]:
    """The Triton kernels: CUDA tensors (CPU tensors only under TRITON_INTERPRET=1)."""
    from fwp.ops import _triton_utils

    return _triton_utils.available(tensor.device)


@dataclass(frozen=True)
class Mode:
    fn: Callable
    can_run: Callable[[torch.Tensor], tuple[bool, str]] = always
    chunked: bool = False  # takes a chunk_size keyword


@functools.cache
def _warn_skipped(op: str, skipped: str, reason: str, chosen: str) -> None:
    warnings.warn(
        f"{op}: mode='auto' cannot use {skipped!r} ({reason}); using {chosen!r}, which is slower",
        RuntimeWarning,
        stacklevel=4,
    )


def auto_choice(
    modes: dict[str, Mode], auto: dict[str, list[str]], tensor: torch.Tensor
) -> tuple[str, tuple[str, str] | None]:
    """The mode ``mode="auto"`` runs on ``tensor``, and ``(skipped mode, why)`` when it had to
    pass over a preferred one."""
    preferences = auto.get(tensor.device.type, auto["default"])
    skipped = None
    for name in preferences:
        ok, reason = modes[name].can_run(tensor)
        if ok:
            return name, skipped
        skipped = skipped or (name, reason)
    raise AssertionError(f"no mode in {preferences} can run")  # lists end with a sure mode


def pick_mode(
    op: str,
    mode: str,
    modes: dict[str, Mode],
    auto: dict[str, list[str]],
    tensor: torch.Tensor,
) -> Mode:
    """The implementation of ``op`` to run on ``tensor``.

    ``auto`` maps a device type ("cpu", "cuda", ...) to modes in order of preference; the
    ``"default"`` entry serves other devices. Every list must end with a mode that always runs.
    """
    if mode != "auto":
        if mode not in modes:
            raise UserError(f"{op}: unknown mode {mode!r}; choose one of {['auto', *modes]}")
        ok, reason = modes[mode].can_run(tensor)
        if not ok:
            raise UserError(f"{op}: mode {mode!r} cannot run here: {reason}")
        return modes[mode]
    name, skipped = auto_choice(modes, auto, tensor)
    if skipped is not None:
        _warn_skipped(op, *skipped, name)
    return modes[name]


def auto_modes(device: torch.device | str = "cpu") -> dict[str, str]:
    """``{operator: mode}`` that ``mode="auto"`` runs on ``device``, for the operators that have
    a choice there, with why a compiled path was passed over (``"scan (fused_cpu unavailable:
    ...)"``). Builds the fused CPU kernels if they are not cached yet, so that a run settles its
    path before its first step."""
    import importlib

    probe = torch.empty(0, device=device)
    out = {}
    for op in ("srwm", "delta_rule", "linear_attention", "delta_product", "gated_delta_rule"):
        module = importlib.import_module(f"fwp.ops.{op}")
        if len(module.AUTO.get(probe.device.type, module.AUTO["default"])) < 2:
            continue
        name, skipped = auto_choice(module.MODES, module.AUTO, probe)
        out[op] = name if skipped is None else f"{name} ({skipped[0]} unavailable: {skipped[1]})"
    return out
