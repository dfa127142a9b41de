"""Continuous-time FWP layers and the neural CDE: discrete limits, adjoint, solvers, refusals."""

import pytest
import torch

from fwp.errors import UserError
from fwp.layers import ContinuousDelta, ContinuousHebb, ContinuousOja, NeuralCDE, build_layer
from fwp.ops import delta_rule, linear_attention
from fwp.ops.continuous import Solver, delta_field, hebb_field, make_path, oja_field, refined_grid

pytest.importorskip("torchdiffeq")

D_MODEL, HEADS = 12, 3


def _inputs(layer, x):
    """The slow net's k̃, ṽ, b̃ ``[B, T, H, ·]`` and softmax queries at every observation."""
    k, v, b = layer.slow_net(x, x)
    q = torch.softmax(layer.query(layer.norm(layer.inp(x))).unflatten(-1, (HEADS, -1)), -1)
    return q, k, v, b


def test_euler_hold_unit_steps_is_deltanet():
    torch.manual_seed(0)
    layer = ContinuousDelta(D_MODEL, HEADS, interpolation="hold", method="euler").double()
    x = torch.randn(2, 9, D_MODEL, dtype=torch.float64)
    q, k, v, b = _inputs(layer, x)
    o, S = delta_rule(q, torch.softmax(k, -1), torch.tanh(v), torch.sigmoid(b),
                      mode="recurrent", output_final_state=True)
    y, state = layer(x)
    torch.testing.assert_close(y, layer.out(o.flatten(-2)))
    torch.testing.assert_close(state["z"], S)


def test_euler_hold_unit_steps_hebb_is_the_sum_rule():
    torch.manual_seed(1)
    layer = ContinuousHebb(D_MODEL, HEADS, interpolation="hold", method="euler").double()
    x = torch.randn(3, 7, D_MODEL, dtype=torch.float64)
    q, k, v, b = _inputs(layer, x)
    o, _ = linear_attention(q, torch.softmax(k, -1), torch.sigmoid(b)[..., None] * torch.tanh(v),
                            mode="recurrent")
    torch.testing.assert_close(layer(x)[0], layer.out(o.flatten(-2)))


def test_euler_steps_follow_the_given_times():
    """Gaps of 2 double every write after the first (the initial write is one unit step)."""
    torch.manual_seed(2)
    layer = ContinuousDelta(D_MODEL, HEADS, interpolation="hold", method="euler").double()
    x = torch.randn(2, 6, D_MODEL, dtype=torch.float64)
    q, k, v, b = _inputs(layer, x)
    beta = torch.sigmoid(b)
    beta = torch.cat([beta[:, :1], 2 * beta[:, 1:]], dim=1)
    o, _ = delta_rule(q, torch.softmax(k, -1), torch.tanh(v), beta, mode="recurrent")
    times = 2.0 * torch.arange(6, dtype=torch.float64) + 5.0
    torch.testing.assert_close(layer(x, times=times)[0], layer.out(o.flatten(-2)))


def _grads(layer, x):
    x = x.clone().requires_grad_()
    layer(x)[0].square().sum().backward()
    return [x.grad] + [p.grad for p in layer.parameters()]


@pytest.mark.parametrize("cls", [ContinuousHebb, ContinuousOja, ContinuousDelta, NeuralCDE])
def test_adjoint_gradients_equal_direct_backpropagation(cls):
    """The fixed-step adjoint solves the continuous adjoint equation on the same grid, so it
    matches backpropagation through the solver up to the discretisation error (rk4: O(h⁴))."""
    torch.manual_seed(3)
    options = {"interpolation": "hold", "method": "rk4", "substeps": 4}
    direct = cls(6, 2, **options).double()
    adjoint = cls(6, 2, adjoint=True, **options).double()
    adjoint.load_state_dict(direct.state_dict())
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    for g_adjoint, g_direct in zip(_grads(adjoint, x), _grads(direct, x)):
        torch.testing.assert_close(g_adjoint, g_direct, rtol=1e-4,
                                   atol=1e-4 * g_direct.abs().max().item())


@pytest.mark.slow
def test_adaptive_adjoint_gradients_equal_direct_backpropagation():
    torch.manual_seed(3)
    options = {"method": "dopri5", "rtol": 1e-8, "atol": 1e-10}
    direct = ContinuousDelta(6, 2, **options).double()
    adjoint = ContinuousDelta(6, 2, adjoint=True, **options).double()
    adjoint.load_state_dict(direct.state_dict())
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    for g_adjoint, g_direct in zip(_grads(adjoint, x), _grads(direct, x)):
        torch.testing.assert_close(g_adjoint, g_direct, rtol=1e-5,
                                   atol=1e-5 * g_direct.abs().max().item())


def test_fixed_steps_converge_and_adaptive_steps_agree():
    torch.manual_seed(4)
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    reference = ContinuousOja(6, 2, method="rk4", substeps=32).double()
    expected = reference(x)[0]
    errors = []
    for substeps in (1, 4):
        layer = ContinuousOja(6, 2, method="rk4", substeps=substeps).double()
        layer.load_state_dict(reference.state_dict())
        errors.append((layer(x)[0] - expected).abs().max().item())
    assert errors[1] < errors[0] / 20
    adaptive = ContinuousOja(6, 2, method="bosh3", rtol=1e-6, atol=1e-8).double()
    adaptive.load_state_dict(reference.state_dict())
    torch.testing.assert_close(adaptive(x)[0], expected, rtol=1e-4, atol=1e-4)


def test_fields_match_their_formulas():
    torch.manual_seed(5)
    k_logits, v = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4).double()
    beta, S = torch.rand(2, 3, dtype=torch.float64), torch.randn(2, 3, 4, 4).double()
    k = torch.softmax(k_logits, -1)
    for b in range(2):
        for h in range(3):
            Sh, kh, vh, bh = S[b, h], k[b, h], v[b, h], beta[b, h]
            torch.testing.assert_close(hebb_field(k, v, beta)[b, h], bh * torch.outer(kh, vh))
            torch.testing.assert_close(delta_field(k, v, beta, S)[b, h],
                                       bh * torch.outer(kh, vh - Sh.T @ kh))
            torch.testing.assert_close(delta_field(k, v, beta, S, post_tanh=True)[b, h],
                                       bh * torch.outer(kh, torch.tanh(vh - Sh.T @ kh)))
            k_oja = torch.softmax(k_logits[b, h] - Sh @ vh, -1)
            torch.testing.assert_close(oja_field(k_logits, v, beta, S)[b, h],
                                       bh * torch.outer(k_oja, vh))


def test_paths_are_left_closed_and_causal():
    t = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    x = torch.tensor([[[0.0], [2.0], [6.0]]], dtype=torch.float64)
    hold, linear = make_path("hold", t, x), make_path("linear", t, x)
    assert hold.evaluate(torch.tensor(0.0)).item() == 2.0  # piece 1 starts at t_0
    assert hold.evaluate(torch.tensor(1.0)).item() == 6.0
    assert linear.evaluate(torch.tensor(2.0)).item() == 4.0
    assert linear.derivative(torch.tensor(0.5)).item() == 2.0
    assert linear.derivative(torch.tensor(3.0)).item() == 2.0  # the last piece at the end
    torch.testing.assert_close(refined_grid(t, 2), torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0],
                                                                dtype=torch.float64))


@pytest.mark.parametrize("name", ["ct_delta", "ct_oja", "ncde"])
def test_dx_drive_and_cubic_paths_run_and_are_causal_where_promised(name):
    torch.manual_seed(6)
    options = {"drive": "dx"} if name.startswith("ct_") else {}
    layer = build_layer(name, D_MODEL, HEADS, **options).double()
    x = torch.randn(1, 8, D_MODEL, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 5:] += 1.0
    torch.testing.assert_close(layer(x)[0][:, :5], layer(x2)[0][:, :5])
    cubic = build_layer(name, D_MODEL, HEADS, interpolation="cubic", **options).double()
    assert cubic(x)[0].shape == x.shape


def test_bad_input_and_options_are_explained():
    layer = ContinuousDelta(D_MODEL, HEADS)
    x = torch.randn(2, 4, D_MODEL)
    with pytest.raises(UserError, match="NaN"):
        layer(torch.where(torch.rand_like(x) < 0.2, float("nan"), x))
    with pytest.raises(UserError, match="strictly increasing"):
        layer(x, times=torch.tensor([0.0, 2.0, 1.0, 3.0]))
    with pytest.raises(UserError, match="strictly increasing"):
        layer(x, times=torch.tensor([0.0, 1.0, 1.0, 3.0]))
    with pytest.raises(UserError, match="T ≥ 1"):
        layer(x[:, :0])
    _, state = layer(x)
    with pytest.raises(UserError, match="after the state"):
        layer(x, state, times=torch.tensor([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(UserError, match="cannot continue"):
        ContinuousDelta(D_MODEL, HEADS, interpolation="cubic")(x, state)
    with pytest.raises(UserError, match="rtol/atol apply to adaptive"):
        Solver("rk4", rtol=1e-3)
    with pytest.raises(UserError, match="substeps applies to fixed-step"):
        Solver("dopri5", substeps=2)
    with pytest.raises(UserError, match="unknown ODE method"):
        ContinuousHebb(D_MODEL, HEADS, method="rk45")
    with pytest.raises(UserError, match="bad options for layer 'ct_hebb'"):
        build_layer("ct_hebb", D_MODEL, HEADS, post_tanh=True)
    with pytest.raises(UserError, match="unknown drive"):
        build_layer("ct_oja", D_MODEL, HEADS, drive="dxdt")
