"""A generic sequential scan over time: ``y_t, state = step(x_t, state, params)``.

For recurrences with no parallel form (a slow net that reads its own previous output, e.g. the
Recurrent DeltaNet, Delta RNN and Delta LSTM of Irie, Schlag, Csordás, Schmidhuber, NeurIPS 2021).
:func:`scan` runs a plain autograd loop (``mode="recurrent"``, the reference), or
:class:`CheckpointedScan`, whose training form keeps only per-step inputs and one copy of the
state every ``checkpoint_every`` steps and recomputes one stretch of time at a time in the
backward (gradient checkpointing, Chen et al. 2016, applied along time).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.autograd.function import once_differentiable

from fwp.errors import UserError

Tensors = tuple[torch.Tensor, ...]
Step = Callable[[Tensors, Tensors, Tensors], tuple[torch.Tensor, Tensors]]


def scan_reference(
    step: Step, inputs: Tensors, state: Tensors, params: Tensors
) -> tuple[torch.Tensor, Tensors]:
    """Plain loop through autograd: stores every intermediate state (O(T·D²) for matrices)."""
    outputs = []
    for x_t in zip(*(x.unbind(1) for x in inputs)):
        y, state = step(x_t, state, params)
        outputs.append(y)
    return torch.stack(outputs, dim=1), state


class CheckpointedScan(torch.autograd.Function):
    """Run ``step`` over time without a graph, keeping the state every ``every`` steps.

    Saved for the backward: the per-step inputs (O(T·D)), the parameters, and ⌈T / every⌉ copies
    of the state (O(T / every · D²)). The backward recomputes one stretch of ``every`` steps at a
    time from its saved state, with a graph, and back-propagates through it, so its peak adds
    O(every · D²). With every ≈ √T the total is O(T·D + √T·D²) instead of O(T·D²).
    """

    @staticmethod
    def forward(ctx, step, every, n_inputs, n_state, *tensors):  # noqa: ANN001 — autograd API
        inputs, state = tensors[:n_inputs], tensors[n_inputs:n_inputs + n_state]
        params = tensors[n_inputs + n_state:]
        checkpoints: list[torch.Tensor] = []
        outputs = []
        for t, x_t in enumerate(zip(*(x.unbind(1) for x in inputs))):
            if t % every == 0:
                checkpoints.extend(state)
            y, state = step(x_t, state, params)
            outputs.append(y)
        ctx.step, ctx.every, ctx.counts = step, every, (n_inputs, n_state, len(params))
        ctx.save_for_backward(*inputs, *params, *checkpoints)
        return (torch.stack(outputs, dim=1), *state)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, *grad_state):  # noqa: ANN001
        n_inputs, n_state, n_params = ctx.counts
        saved = ctx.saved_tensors
        inputs, params = saved[:n_inputs], saved[n_inputs:n_inputs + n_params]
        checkpoints = saved[n_inputs + n_params:]
        T = inputs[0].shape[1]
        grad_inputs = [torch.zeros_like(x) for x in inputs]
        grad_params = [torch.zeros_like(p) for p in params]
        carry = list(grad_state)
        for c in range(len(checkpoints) // n_state - 1, -1, -1):
            start, end = c * ctx.every, min(T, (c + 1) * ctx.every)
            with torch.enable_grad():
                state0 = tuple(
                    s.detach().requires_grad_() for s in checkpoints[c * n_state:(c + 1) * n_state]
                )
                xs = tuple(x[:, start:end].detach().requires_grad_() for x in inputs)
                ps = tuple(p.detach().requires_grad_() for p in params)
                y, state = scan_reference(ctx.step, xs, state0, ps)
                grads = torch.autograd.grad(
                    (y, *state), (*xs, *state0, *ps), (grad_y[:, start:end], *carry),
                    allow_unused=True,
                )
            for i, g in enumerate(grads[:n_inputs]):
                if g is not None:
                    grad_inputs[i][:, start:end] = g
            carry = [
                torch.zeros_like(s) if g is None else g
                for s, g in zip(state0, grads[n_inputs:n_inputs + n_state])
            ]
            for i, g in enumerate(grads[n_inputs + n_state:]):
                if g is not None:
                    grad_params[i] += g
        return (None, None, None, None, *grad_inputs, *carry, *grad_params)


def scan(
    step: Step,
    inputs: Sequence[torch.Tensor],
    state: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor] = (),
    *,
    mode: str = "auto",
    checkpoint_every: int | None = None,
) -> tuple[torch.Tensor, Tensors]:
    """Apply ``y_t, state = step(x_t, state, params)`` for t = 1..T.

    Args:
        step: a pure, deterministic function of (per-step input slices, state, params); it is
            re-run in the backward of the fast form.
        inputs: tensors ``[B, T, ...]`` sliced along time (``unbind(1)``).
        state: the initial state tensors.
        params: tensors the step reads at every step (slow weights), so their gradients flow.
        mode: ``"recurrent"`` (plain autograd loop) or ``"auto"`` (:class:`CheckpointedScan`).
        checkpoint_every: steps between saved states; ``None`` picks ⌈√T⌉.

    Returns:
        ``(y [B, T, ...], final state)``.
    """
    if checkpoint_every is not None and (
        not isinstance(checkpoint_every, int) or checkpoint_every < 1
    ):
        raise UserError(f"checkpoint_every must be a positive int, got {checkpoint_every!r}")
    inputs, state, params = tuple(inputs), tuple(state), tuple(params)
    tensors = (*inputs, *state, *params)
    # torch.compile traces the plain loop: the checkpointed backward calls autograd itself,
    # which the compiler cannot trace (a compiled scan keeps every state, as the reference).
    if mode == "recurrent" or torch.compiler.is_compiling() or not (
        torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    ):
        return scan_reference(step, inputs, state, params)
    T = inputs[0].shape[1]
    every = checkpoint_every or math.ceil(math.sqrt(T))
    y, *final = CheckpointedScan.apply(step, every, len(inputs), len(state), *tensors)
    return y, tuple(final)
