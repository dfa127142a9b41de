"""A mark for ``torch.compile``, in a module of its own so that the kernel back ends
(:mod:`fwp.ops._cpp`, :mod:`fwp.ops._triton_utils`) and the dispatcher that asks them
(:mod:`fwp.ops._dispatch`) do not import each other."""

from __future__ import annotations

from collections.abc import Callable


def constant_for_compile(fn: Callable) -> Callable:
    """Mark ``fn`` as ``torch.compiler.assume_constant_result`` does: ``torch.compile`` calls it
    once while tracing and keeps its result, instead of tracing into it (availability checks
    build and cache things it cannot trace). Done by hand, since importing ``torch.compiler``'s
    helper imports ``torch._dynamo`` and with it triton, which must wait for the first kernel
    launch (see :mod:`fwp.ops._triton_utils`); ``tests/ops/test_compile.py`` checks the mark."""
    fn._dynamo_marked_constant = True
    return fn
