"""What the Triton kernels share: a lazy import, the availability check, block sizes.

Triton decides once, when ``triton`` is imported, whether kernels are compiled for the GPU or run
by its numpy interpreter (``TRITON_INTERPRET=1``, how CI tests them on CPU tensors). So importing
fwp must not import triton: the kernels are plain functions written against the module-level name
``tl`` and become ``triton.jit`` kernels on their first launch (:class:`LazyKernel`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any

import torch

from fwp.errors import UserError
from fwp.ops._compile_marks import constant_for_compile

INSTALL_HINT = "pip install triton (or the fwp[triton] extra)"


def interpreting() -> bool:
    """True when triton was imported with TRITON_INTERPRET=1 (kernels run in numpy)."""
    import triton.language.standard as standard
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(standard.max, InterpretedFunction)


@constant_for_compile
def available(device: torch.device | str | None = None) -> tuple[bool, str]:
    """Whether the Triton kernels can run on tensors on ``device``, and why (not).

    They run on CUDA tensors, and on CPU tensors under the Triton interpreter
    (TRITON_INTERPRET=1 set before triton is imported; correct but slow, meant for tests).
    ``device=None`` asks about the CUDA device if there is one, else the CPU.
    """
    if importlib.util.find_spec("triton") is None:
        return False, f"triton is not installed: {INSTALL_HINT}"
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    asked = os.environ.get("TRITON_INTERPRET", "0") == "1"
    imported = "triton.language" in sys.modules
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "no CUDA device is visible to torch"
        if asked or (imported and interpreting()):
            return True, "Triton interpreter (TRITON_INTERPRET=1): correct but slow"
        return True, "Triton kernels on CUDA"
    if device.type != "cpu":
        return False, f"the Triton kernels run on CUDA tensors, not on {device.type}"
    if not asked:
        return False, (
            "the Triton kernels need CUDA tensors; on CPU tensors they run only under the Triton "
            "interpreter (set TRITON_INTERPRET=1 before triton is imported; slow, for tests)"
        )
    if imported and not interpreting():
        return False, (
            "TRITON_INTERPRET=1 was set after triton had been imported in this process, so "
            "triton compiles for the GPU: set it in the environment before starting Python"
        )
    return True, "Triton interpreter (TRITON_INTERPRET=1) on CPU tensors: correct but slow"


def require(op: str, device: torch.device) -> None:
    """Raise a :class:`UserError` naming the reason when the kernels cannot run on ``device``."""
    ok, why = available(device)
    if not ok:
        raise UserError(f"{op} cannot run: {why}")


def block(n: int, minimum: int = 1) -> int:
    """The power of two ≥ max(n, minimum) that pads a dimension of n (Triton blocks are 2^k)."""
    return max(minimum, 1 << (n - 1).bit_length())


def accumulator(dtype: torch.dtype) -> Any:
    """Triton dtype of the state: float32 (float64 for float64 inputs, as the references)."""
    import triton.language as tl

    return tl.float64 if dtype == torch.float64 else tl.float32


class LazyKernel:
    """A kernel that is handed to ``triton.jit`` on its first launch: ``kernel[grid](...)``.

    Binds the kernel module's global ``tl`` to ``triton.language`` at that moment.
    """

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self._jitted: Any = None

    def __getitem__(self, grid: tuple[int, ...]) -> Callable:
        if self._jitted is None:
            import triton
            import triton.language

            self.fn.__globals__["tl"] = triton.language
            self._jitted = triton.jit(self.fn)
        return self._jitted[grid]
