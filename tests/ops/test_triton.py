"""Triton kernels against the references, forward and gradients, under the Triton interpreter.

TRITON_INTERPRET=1 must be set before triton is imported; fwp never imports triton before a kernel
runs, and pytest imports this module (collection) before any test runs, so setting it here is in
time. Only triton reads the variable: other test modules in the process are unaffected. The
interpreter runs the kernels in numpy, one program after another, so the shapes are small.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import importlib.util  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fwp.errors import UserError  # noqa: E402
from fwp.ops import srwm_rows  # noqa: E402
from fwp.ops._triton_utils import available  # noqa: E402
from fwp.ops.delta_rule.naive import delta_rule_recurrent  # noqa: E402
from fwp.ops.delta_rule.triton import (  # noqa: E402
    delta_rule_chunk_triton,
    delta_rule_fused_recurrent_triton,
)
from fwp.ops.srwm.naive import srwm_recurrent  # noqa: E402
from fwp.ops.srwm.scan import srwm_scan  # noqa: E402
from fwp.ops.srwm.triton import srwm_triton  # noqa: E402
from tests.ops.helpers import assert_same_forward_and_grads, grads_of, leaf  # noqa: E402

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed (pip install triton)", allow_module_level=True)
_ok, _why = available("cpu")
if not _ok:
    pytest.skip(f"Triton kernels cannot run on CPU tensors here: {_why}", allow_module_level=True)

# float32 sums in another order than the reference: errors of a few ulps of values up to ~10
ATOL = {torch.float32: 2e-4, torch.float64: 1e-10}


# --- SRWM ------------------------------------------------------------------------------------

SRWM_CASES = [  # B, T, H, D, D_out, n_beta, input_softmax, per-sequence W0
    (2, 7, 2, 5, 3, 1, False, False),
    (2, 7, 1, 8, 8, 4, True, True),
    (1, 37, 1, 5, 7, 4, False, False),
    (1, 37, 1, 8, 4, 1, True, False),
    (2, 1, 2, 16, 16, 1, True, True),
]


def srwm_inputs(B, T, H, D, d_out, n_beta, per_sequence, dtype):
    rows = srwm_rows(d_out, D, n_beta)
    W_shape = (B, H, rows, D) if per_sequence else (H, rows, D)
    return [leaf(B, T, H, D, dtype=dtype), leaf(*W_shape, dtype=dtype, fn=lambda w: w / D**0.5)]


def srwm_pair(n_beta, input_softmax):
    def reference(x, W0):
        return srwm_recurrent(x, W0, n_beta, input_softmax)

    def fast(x, W0):
        return srwm_triton(x, W0, n_beta, input_softmax)

    return reference, fast


@pytest.mark.parametrize("case", SRWM_CASES, ids=str)
def test_srwm_matches_reference(case):
    B, T, H, D, d_out, n_beta, input_softmax, per_sequence = case
    inputs = srwm_inputs(B, T, H, D, d_out, n_beta, per_sequence, torch.float32)
    assert_same_forward_and_grads(
        *srwm_pair(n_beta, input_softmax), inputs, atol=ATOL[torch.float32]
    )


@pytest.mark.parametrize("n_beta", [1, 4])
def test_srwm_rates_in_zero_two_match_reference(n_beta):
    """rate_scale = 2: rates 2σ(b) (above 1 here), forward and gradients."""
    x, W0 = srwm_inputs(2, 9, 2, 5, 3, n_beta, False, torch.float64)
    with torch.no_grad():
        W0[..., -n_beta:, :] += 2.0
    assert_same_forward_and_grads(
        lambda x, W0: srwm_recurrent(x, W0, n_beta, True, rate_scale=2.0),
        lambda x, W0: srwm_triton(x, W0, n_beta, True, rate_scale=2.0),
        [x, W0], atol=ATOL[torch.float64],
    )


def test_srwm_float64_is_exact_to_rounding():
    inputs = srwm_inputs(2, 7, 2, 5, 3, 4, True, torch.float64)
    assert_same_forward_and_grads(*srwm_pair(4, True), inputs, atol=ATOL[torch.float64])


@pytest.mark.parametrize("used", ["y", "W_T"])
def test_srwm_gradient_through_one_output(used):
    """Autograd hands the backward None for an unused output: the kernel must treat it as 0."""
    x, W0 = srwm_inputs(1, 7, 2, 5, 4, 1, False, torch.float32)
    pick = 0 if used == "y" else 1
    ref = grads_of([srwm_recurrent(x, W0)[pick]], [x, W0])
    fast = grads_of([srwm_triton(x, W0)[pick]], [x, W0])
    for r, f in zip(ref, fast, strict=True):
        torch.testing.assert_close(f, r, atol=ATOL[torch.float32], rtol=1e-5)


def test_srwm_bfloat16_input_float32_state():
    x, W0 = torch.randn(1, 9, 2, 8), torch.randn(2, srwm_rows(8, 8), 8) / 8**0.5
    x16 = x.bfloat16().requires_grad_()
    y, W = srwm_triton(x16, W0)
    y_ref, W_ref = srwm_scan(x.bfloat16(), W0)
    assert y.dtype == torch.bfloat16 and W.dtype == torch.float32
    torch.testing.assert_close(y.float(), y_ref.float(), atol=0.05, rtol=0.02)
    torch.testing.assert_close(W, W_ref, atol=1e-5, rtol=1e-5)
    y.float().sum().backward()
    assert x16.grad.dtype == torch.bfloat16 and torch.isfinite(x16.grad.float()).all()


def test_srwm_large_D_is_refused_with_a_reason():
    x = torch.randn(1, 2, 1, 65)
    with pytest.raises(UserError, match="D ≤ 64"):
        srwm_triton(x, torch.randn(1, srwm_rows(2, 65), 65))


# --- delta rule ------------------------------------------------------------------------------

DELTA_CASES = [  # B, T, H, K, V, initial state, chunk size
    (2, 7, 2, 5, 7, False, 16),
    (2, 37, 1, 5, 7, True, 16),
    (1, 37, 2, 16, 8, False, 32),
    (2, 1, 1, 3, 4, True, 64),
    (1, 7, 1, 4, 40, True, 16),  # V > 32: the forward splits S's columns over two programs
]


def delta_inputs(B, T, H, K, V, with_state, dtype):
    inputs = [
        leaf(B, T, H, K, dtype=dtype), leaf(B, T, H, K, dtype=dtype, fn=F.normalize),
        leaf(B, T, H, V, dtype=dtype), leaf(B, T, H, dtype=dtype, fn=torch.sigmoid),
    ]
    if with_state:
        inputs.append(leaf(B, H, K, V, dtype=dtype))
    return inputs


def delta_pair(form, chunk_size):
    def reference(q, k, v, beta, s0=None):
        return delta_rule_recurrent(q, k, v, beta, s0, True)

    def fast(q, k, v, beta, s0=None):
        if form == "fused":
            return delta_rule_fused_recurrent_triton(q, k, v, beta, s0, True)
        return delta_rule_chunk_triton(q, k, v, beta, s0, True, chunk_size=chunk_size)

    return reference, fast


@pytest.mark.parametrize("form", ["fused", "chunk"])
@pytest.mark.parametrize("case", DELTA_CASES, ids=str)
def test_delta_rule_matches_reference(case, form):
    B, T, H, K, V, with_state, chunk_size = case
    inputs = delta_inputs(B, T, H, K, V, with_state, torch.float32)
    assert_same_forward_and_grads(*delta_pair(form, chunk_size), inputs, atol=ATOL[torch.float32])


@pytest.mark.parametrize("form", ["fused", "chunk"])
def test_delta_rule_largest_heads_match_reference(form):
    """K = V = 128, chunks of 64: the largest shapes, launched in V blocks and column blocks.
    q is scaled by 1/√K so that outputs stay of order 1, where ATOL is meant."""
    q, *rest = delta_inputs(1, 67, 1, 128, 128, True, torch.float32)
    q = (q.detach() / 128**0.5).requires_grad_()
    assert_same_forward_and_grads(*delta_pair(form, 64), [q, *rest], atol=ATOL[torch.float32])


@pytest.mark.parametrize("form", ["fused", "chunk"])
def test_delta_rule_float64_is_exact_to_rounding(form):
    inputs = delta_inputs(1, 37, 1, 6, 5, True, torch.float64)
    assert_same_forward_and_grads(*delta_pair(form, 16), inputs, atol=ATOL[torch.float64])


def test_delta_rule_final_state_only_and_none():
    q, k, v, beta, s0 = delta_inputs(1, 7, 1, 4, 4, True, torch.float32)
    o, S = delta_rule_fused_recurrent_triton(q, k, v, beta, s0)
    assert S is None and o.shape == v.shape
    _, S_ref = delta_rule_recurrent(q, k, v, beta, s0, True)
    _, S = delta_rule_chunk_triton(q, k, v, beta, s0, True, chunk_size=16)
    inputs = [k, v, beta, s0]  # S_T does not depend on q
    for r, f in zip(grads_of([S_ref], inputs), grads_of([S], inputs), strict=True):
        torch.testing.assert_close(f, r, atol=ATOL[torch.float32], rtol=1e-5)


def test_delta_rule_bad_chunk_size_is_refused():
    q, k, v, beta = delta_inputs(1, 3, 1, 4, 4, False, torch.float32)
    with pytest.raises(UserError, match="chunk_size"):
        delta_rule_chunk_triton(q, k, v, beta, chunk_size=48)


# --- availability ----------------------------------------------------------------------------


def test_availability_gives_reasons():
    assert available("cpu") == (True, available("cpu")[1])
    ok, why = available("meta")
    assert not ok and "CUDA" in why


def test_importing_fwp_does_not_import_triton():
    """TRITON_INTERPRET is read when triton is imported, so fwp must leave that to the first
    kernel launch (see fwp.ops._triton_utils)."""
    code = (
        "import sys, fwp.ops, fwp.ops.srwm.triton, fwp.ops.delta_rule.triton; "
        "assert 'triton' not in sys.modules, 'triton imported'"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
