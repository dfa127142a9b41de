"""The generic checkpointed scan: the plain loop's outputs and gradients, and what it saves."""

import math

import pytest
import torch

from fwp.ops.scan import scan
from tests.ops.helpers import grads_of, saved_bytes


def delta_cell(x_t, state, params):
    """A matrix-state step for the scan tests: a delta rule whose read feeds the next key."""
    (k, v, beta), (S, h), (R,) = x_t, state, params
    k = torch.softmax(k + h @ R, dim=-1)
    v_old = torch.einsum("bk,bkv->bv", k, S)
    S = S + torch.einsum("bk,bv->bkv", k, beta.unsqueeze(-1) * (v - v_old))
    h = torch.tanh(torch.einsum("bk,bkv->bv", k, S))
    return h, (S, h)


def scan_inputs(B, T, D, requires_grad=True):
    tensors = [
        torch.randn(B, T, D, dtype=torch.float64), torch.randn(B, T, D, dtype=torch.float64),
        torch.rand(B, T, dtype=torch.float64),
    ]
    state = [torch.randn(B, D, D, dtype=torch.float64), torch.randn(B, D, dtype=torch.float64)]
    params = [torch.randn(D, D, dtype=torch.float64) / D]
    return [t.requires_grad_(requires_grad) for t in (*tensors, *state, *params)]


@pytest.mark.parametrize("every", [1, 3, None, 50])
def test_scan_matches_reference_loop(every):
    *inputs, S0, h0, R = scan_inputs(2, 13, 5)

    def run(mode):
        def fn(k, v, beta, S0, h0, R):
            y, (S, h) = scan(
                delta_cell, (k, v, beta), (S0, h0), (R,), mode=mode, checkpoint_every=every
            )
            return y, S, h
        return fn

    args = (*inputs, S0, h0, R)
    for a, b in zip(run("auto")(*args), run("recurrent")(*args), strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(
        grads_of(run("auto")(*args), args), grads_of(run("recurrent")(*args), args), strict=True
    ):
        torch.testing.assert_close(a, b)
    if every == 3:
        assert torch.autograd.gradcheck(run("auto"), args, fast_mode=True)


def test_scan_saves_inputs_and_one_state_per_checkpoint_only():
    B, T, D, every = 2, 40, 6, 7
    *inputs, S0, h0, R = scan_inputs(B, T, D)
    saved = saved_bytes(
        lambda: scan(delta_cell, inputs, (S0, h0), (R,), checkpoint_every=every)
    )
    per_state = (S0.numel() + h0.numel()) * 8
    design = sum(t.numel() * 8 for t in (*inputs, R)) + math.ceil(T / every) * per_state
    assert saved == design
