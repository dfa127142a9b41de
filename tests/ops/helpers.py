"""Shared checks for the operator tests: a fast form against its reference, forward and grads."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def grads_of(outputs: Sequence[torch.Tensor | None], inputs: Sequence[torch.Tensor]):
    """Gradients of a fixed, non-trivial function of the outputs (so every output matters)."""
    weights = torch.Generator().manual_seed(1)
    loss = 0.0
    for out in outputs:
        if out is not None:
            w = torch.randn(out.shape, generator=weights, dtype=out.dtype)
            loss = loss + (w * out).sum() + (out**2).sum() * 0.1
    return torch.autograd.grad(loss, inputs, allow_unused=False)


def assert_same_forward_and_grads(
    reference: Callable[..., tuple], fast: Callable[..., tuple], inputs: Sequence[torch.Tensor],
    atol: float = 1e-9,
) -> None:
    ref_out = reference(*inputs)
    fast_out = fast(*inputs)
    for r, f in zip(ref_out, fast_out, strict=True):
        assert (r is None) == (f is None)
        if r is not None:
            torch.testing.assert_close(f, r, atol=atol, rtol=1e-7)
    for r, f in zip(grads_of(ref_out, inputs), grads_of(fast_out, inputs), strict=True):
        torch.testing.assert_close(f, r, atol=atol, rtol=1e-7)


def leaf(*shape: int, dtype: torch.dtype = torch.float64, fn=None) -> torch.Tensor:
    x = torch.randn(*shape, dtype=dtype)
    if fn is not None:
        x = fn(x)
    return x.requires_grad_()


def saved_bytes(fn):
    """Bytes of the distinct storages autograd keeps for the backward of ``fn()``."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())
