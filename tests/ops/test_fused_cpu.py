"""The fused C++ CPU kernels against the reference loops, forward and gradients.

The extension compiles once per machine (torch caches it; later sessions only load it). These
tests skip only when no C++ compiler exists; a compiler that fails to build them is a failure.
"""

import warnings

import pytest
import torch

from fwp.errors import UserError
from fwp.ops import _cpp, srwm, srwm_rows
from fwp.ops._dispatch import _warn_skipped
from fwp.ops.delta_rule.cpu import delta_rule_fused_cpu
from fwp.ops.delta_rule.naive import delta_rule_recurrent
from fwp.ops.srwm.cpu import srwm_fused_cpu
from fwp.ops.srwm.naive import srwm_recurrent
from tests.ops.helpers import assert_same_forward_and_grads, leaf

pytestmark = pytest.mark.skipif(
    _cpp._compiler() is None, reason="no C++ compiler ($CXX or c++): the fused CPU kernels need one"
)


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> None:
    _cpp.extension()  # compiles once (or loads the cached build); raises if the build fails


def make_W0(H, D, d_out, n_beta, batch=None, dtype=torch.float64):
    rows = srwm_rows(d_out, D, n_beta)
    shape = (H, rows, D) if batch is None else (batch, H, rows, D)
    return leaf(*shape, dtype=dtype, fn=lambda w: w / D**0.5)


def unit_keys(*shape, dtype=torch.float64):
    return leaf(*shape, dtype=dtype, fn=lambda k: torch.nn.functional.normalize(k, dim=-1))


# (B, T, H, D, d_out): T = 1, T not a multiple of anything, H = 1, D not a power of two,
# d_out ≠ D, and R on both sides of the kernel's padding to 16 rows.
SRWM_SHAPES = [(2, 1, 3, 5, 5), (2, 37, 1, 5, 7), (1, 100, 2, 6, 3), (2, 9, 2, 17, 16)]


@pytest.mark.parametrize("shape", SRWM_SHAPES)
@pytest.mark.parametrize("n_beta", [1, 4])
@pytest.mark.parametrize("input_softmax", [False, True])
@pytest.mark.parametrize("per_sequence_W0", [False, True])
def test_srwm_matches_reference(shape, n_beta, input_softmax, per_sequence_W0):
    B, T, H, D, d_out = shape
    x = leaf(B, T, H, D)
    W0 = make_W0(H, D, d_out, n_beta, batch=B if per_sequence_W0 else None)
    assert_same_forward_and_grads(
        lambda x, W0: srwm_recurrent(x, W0, n_beta, input_softmax),
        lambda x, W0: srwm_fused_cpu(x, W0, n_beta, input_softmax),
        [x, W0],
    )


# (B, T, H, K, V)
DELTA_SHAPES = [(2, 1, 3, 4, 5), (2, 37, 1, 5, 7), (1, 100, 2, 6, 3), (1, 20, 2, 17, 33)]


@pytest.mark.parametrize("shape", DELTA_SHAPES)
@pytest.mark.parametrize("with_initial_state", [False, True])
@pytest.mark.parametrize("output_final_state", [False, True])
def test_delta_rule_matches_reference(shape, with_initial_state, output_final_state):
    B, T, H, K, V = shape
    inputs = [leaf(B, T, H, K), unit_keys(B, T, H, K), leaf(B, T, H, V)]
    inputs.append(leaf(B, T, H, fn=torch.sigmoid))
    if with_initial_state:
        inputs.append(leaf(B, H, K, V))

    def run(fn):
        def call(q, k, v, beta, *state):
            return fn(q, k, v, beta, state[0] if state else None, output_final_state)

        return call

    assert_same_forward_and_grads(run(delta_rule_recurrent), run(delta_rule_fused_cpu), inputs)


@pytest.mark.parametrize("shape", SRWM_SHAPES[1:3])
@pytest.mark.parametrize("n_beta", [1, 4])
def test_srwm_rates_in_zero_two_match_reference(shape, n_beta):
    """rate_scale = 2: rates 2σ(b), above 1 here (β rows shifted up), forward and gradients."""
    B, T, H, D, d_out = shape
    x = leaf(B, T, H, D)
    W0 = make_W0(H, D, d_out, n_beta)
    with torch.no_grad():
        W0[:, -n_beta:] += 2.0
    assert_same_forward_and_grads(
        lambda x, W0: srwm_recurrent(x, W0, n_beta, True, rate_scale=2.0),
        lambda x, W0: srwm_fused_cpu(x, W0, n_beta, True, rate_scale=2.0),
        [x, W0],
    )
    x, W0 = leaf(2, 4, 2, 3), make_W0(2, 3, 2, n_beta)
    assert torch.autograd.gradcheck(
        lambda x, W0: srwm_fused_cpu(x, W0, n_beta, input_softmax=True, rate_scale=2.0), (x, W0)
    )


@pytest.mark.parametrize("n_beta", [1, 4])
def test_srwm_gradcheck(n_beta):
    x, W0 = leaf(2, 4, 2, 3), make_W0(2, 3, 2, n_beta)
    assert torch.autograd.gradcheck(
        lambda x, W0: srwm_fused_cpu(x, W0, n_beta, input_softmax=True), (x, W0)
    )


def test_delta_rule_gradcheck():
    q, k, v = leaf(2, 4, 2, 3), unit_keys(2, 4, 2, 3), leaf(2, 4, 2, 2)
    beta, state = leaf(2, 4, 2, fn=torch.sigmoid), leaf(2, 2, 3, 2)
    assert torch.autograd.gradcheck(
        lambda *t: delta_rule_fused_cpu(*t, output_final_state=True), (q, k, v, beta, state)
    )


def test_float32_long_sequence_stays_close_to_float64():
    """Rebuilding W_{t−1} from W_t in float32 (and the kernel's own exp) over T = 260 steps."""
    B, T, H, D = 2, 260, 2, 16
    x, W0 = leaf(B, T, H, D), make_W0(H, D, D, 4)
    w_y, w_W = torch.randn(B, T, H, D, dtype=torch.float64), torch.randn(B, H, 52, D)

    def forward_and_grads(x, W0):
        y, W_T = srwm_fused_cpu(x, W0, 4) if x.dtype == torch.float32 else srwm_recurrent(x, W0, 4)
        loss = (w_y.to(y.dtype) * y).sum() + (w_W.to(W_T.dtype) * W_T).sum()
        return (y, W_T, *torch.autograd.grad(loss, [x, W0]))

    ref = forward_and_grads(x, W0)
    fused = forward_and_grads(*(t.detach().float().requires_grad_() for t in (x, W0)))
    for r, f in zip(ref, fused, strict=True):
        torch.testing.assert_close(f.double(), r, atol=1e-4, rtol=1e-4)


def test_bfloat16_inputs_use_a_float32_state():
    x, W0 = leaf(2, 30, 2, 8, dtype=torch.bfloat16), make_W0(2, 8, 8, 4, dtype=torch.bfloat16)
    y, W_T = srwm_fused_cpu(x, W0, 4)
    y_ref, W_ref = srwm_recurrent(x, W0, 4)
    assert y.dtype == torch.bfloat16 and W_T.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(W_T, W_ref, atol=1e-4, rtol=1e-4)
    grad_x, grad_W0 = torch.autograd.grad((y.float() ** 2).sum() + W_T.sum(), [x, W0])
    assert grad_x.dtype == grad_W0.dtype == torch.bfloat16

    q, k, v = leaf(2, 30, 2, 8, dtype=torch.bfloat16), unit_keys(2, 30, 2, 8), leaf(2, 30, 2, 8)
    k, v = (t.detach().bfloat16().requires_grad_() for t in (k, v))
    beta = leaf(2, 30, 2, dtype=torch.bfloat16, fn=torch.sigmoid)
    o, S = delta_rule_fused_cpu(q, k, v, beta, None, True)
    o_ref, S_ref = delta_rule_recurrent(q, k, v, beta, None, True)
    assert o.dtype == torch.bfloat16 and S.dtype == torch.float32
    torch.testing.assert_close(o, o_ref, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(S, S_ref, atol=1e-4, rtol=1e-4)
    grads = torch.autograd.grad(o.float().sum() + S.sum(), [q, k, v, beta])
    assert all(g.dtype == torch.bfloat16 for g in grads)


def test_threads_do_not_change_the_result():
    x, W0 = leaf(3, 20, 5, 6), make_W0(5, 6, 4, 1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = srwm_fused_cpu(x, W0)
        torch.set_num_threads(2)
        two = srwm_fused_cpu(x, W0)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


def test_srwm_continues_from_a_per_sequence_state():
    x, W0 = leaf(2, 30, 2, 4), make_W0(2, 4, 4, 1)
    y, W = srwm_fused_cpu(x, W0)
    y1, W_mid = srwm_fused_cpu(x[:, :13], W0)
    y2, W_end = srwm_fused_cpu(x[:, 13:], W_mid)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y)
    torch.testing.assert_close(W_end, W)


def test_tensors_off_the_cpu_are_refused():
    x, W0 = torch.empty(1, 2, 1, 3, device="meta"), torch.empty(1, 8, 3, device="meta")
    with pytest.raises(UserError, match="runs on the CPU"):
        srwm_fused_cpu(x, W0)
    q = torch.empty(1, 2, 1, 3, device="meta")
    with pytest.raises(UserError, match="q is on meta"):
        delta_rule_fused_cpu(q, q, q, torch.empty(1, 2, 1, device="meta"))


def test_missing_compiler_is_reported(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-fwp")
    module, reason = _cpp.build()
    assert module is None and "no C++ compiler" in reason and "no-such-compiler-fwp" in reason


def test_unavailable_kernels_raise_and_warn_once(monkeypatch):
    monkeypatch.setattr(_cpp, "_loaded", lambda: (None, "no C++ compiler found"))
    assert _cpp.available() == (False, "no C++ compiler found")
    with pytest.raises(UserError, match="fused_cpu.*no C\\+\\+ compiler found"):
        srwm_fused_cpu(leaf(1, 2, 1, 3), make_W0(1, 3, 2, 1))
    with pytest.raises(UserError, match="mode 'fused_cpu' cannot run here: no C\\+\\+ compiler"):
        srwm(leaf(1, 2, 1, 3), make_W0(1, 3, 2, 1), d_out=2, mode="fused_cpu")
    _warn_skipped.cache_clear()
    x, W0 = leaf(1, 2, 1, 3), make_W0(1, 3, 2, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y, _ = srwm(x, W0, d_out=2)
        srwm(x, W0, d_out=2)
    _warn_skipped.cache_clear()
    assert len(caught) == 1 and "using 'scan'" in str(caught[0].message)
    torch.testing.assert_close(y, srwm(x, W0, d_out=2, mode="recurrent")[0])


def test_missing_ninja_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # no cached build to load
    monkeypatch.setattr(_cpp, "_find_ninja", lambda: False)
    module, reason = _cpp.build()
    assert module is None and "pip install ninja" in reason
