import pytest
import torch

from fwp.dual import (
    delta_rule_contributions,
    srwm_contributions,
    sum_rule_contributions,
    write_attributions,
)
from fwp.errors import UserError
from fwp.ops import delta_rule, linear_attention, srwm, srwm_rows

TOL = {"atol": 1e-10, "rtol": 1e-10}
SHAPES = [(2, 1, 3, 4, 5), (1, 7, 1, 3, 2), (2, 13, 2, 5, 6)]  # B, T, H, K, V


def inputs(B, T, H, K, V, with_state):
    q = torch.randn(B, T, H, K, dtype=torch.float64)
    k = torch.nn.functional.normalize(torch.randn(B, T, H, K, dtype=torch.float64), dim=-1)
    v = torch.randn(B, T, H, V, dtype=torch.float64)
    beta = torch.rand(B, T, H, dtype=torch.float64)
    state = torch.randn(B, H, K, V, dtype=torch.float64) if with_state else None
    return q, k, v, beta, state


def assert_causal(dec, strict):
    T = dec.scores.shape[1]
    hidden = ~torch.ones(T, T, dtype=torch.bool).tril(-1 if strict else 0)
    assert (dec.contributions.transpose(1, 2)[:, :, hidden] == 0).all()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_state", [False, True])
def test_sum_rule_parts_add_up(shape, with_state):
    q, k, v, _, state = inputs(*shape, with_state)
    dec = sum_rule_contributions(q, k, v, initial_state=state)
    o, _ = linear_attention(q, k, v, initial_state=state, mode="recurrent")
    assert dec.contributions.shape == (*shape[:3], shape[1], shape[4])
    torch.testing.assert_close(dec.total(), o, **TOL)
    assert_causal(dec, strict=False)
    if not with_state:
        assert (dec.initial == 0).all()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_state", [False, True])
def test_delta_rule_parts_add_up(shape, with_state):
    q, k, v, beta, state = inputs(*shape, with_state)
    dec = delta_rule_contributions(q, k, v, beta, initial_state=state)
    o, _ = delta_rule(q, k, v, beta, initial_state=state, mode="recurrent")
    torch.testing.assert_close(dec.total(), o, **TOL)
    assert_causal(dec, strict=False)


def test_delta_rule_first_write_is_beta_times_error():
    q, k, v, beta, state = inputs(1, 3, 1, 4, 2, with_state=True)
    dec = delta_rule_contributions(q, k, v, beta, initial_state=state)
    expected = beta[:, 0, :, None] * (v[:, 0] - torch.einsum("bhk,bhkv->bhv", k[:, 0], state))
    torch.testing.assert_close(dec.values[:, 0], expected, **TOL)


@pytest.mark.parametrize("n_beta", [1, 4])
@pytest.mark.parametrize("input_softmax", [False, True])
@pytest.mark.parametrize("shape", [(2, 1, 3, 4, 5), (1, 9, 1, 3, 2), (2, 12, 2, 5, 3)])
@pytest.mark.parametrize("per_sequence_W0", [False, True])
def test_srwm_parts_add_up(shape, n_beta, input_softmax, per_sequence_W0):
    B, T, H, D, d_out = shape
    x = torch.randn(B, T, H, D, dtype=torch.float64)
    rows = srwm_rows(d_out, D, n_beta)
    W0 = torch.randn(*((B,) if per_sequence_W0 else ()), H, rows, D, dtype=torch.float64)
    dec = srwm_contributions(x, W0, n_beta=n_beta, input_softmax=input_softmax, d_out=d_out)
    y, _ = srwm(x, W0, n_beta=n_beta, input_softmax=input_softmax, d_out=d_out,
                mode="recurrent")
    assert dec.contributions.shape == (B, T, H, T, d_out)
    torch.testing.assert_close(dec.total(), y, **TOL)
    assert_causal(dec, strict=True)
    torch.testing.assert_close(dec.initial[:, 0], y[:, 0], **TOL)


def test_srwm_parts_add_up_with_rates_in_zero_two():
    x = torch.randn(2, 9, 2, 4, dtype=torch.float64)
    W0 = torch.randn(2, srwm_rows(4, 4, 4), 4, dtype=torch.float64)
    dec = srwm_contributions(x, W0, n_beta=4, rate_scale=2.0)
    y, _ = srwm(x, W0, n_beta=4, rate_scale=2.0, mode="recurrent")
    torch.testing.assert_close(dec.total(), y, **TOL)


@pytest.mark.parametrize("direction", ["channel", "vector", "per_head"])
def test_write_attributions_sum_to_the_read_out(direction):
    B, T, H, K, V = 2, 6, 3, 4, 5
    q, k, v, beta, state = inputs(B, T, H, K, V, with_state=True)
    dec = delta_rule_contributions(q, k, v, beta, initial_state=state)
    d = {
        "channel": 2,
        "vector": torch.randn(V, dtype=torch.float64),
        "per_head": torch.randn(B, H, V, dtype=torch.float64),
    }[direction]
    t = 3
    initial, per_write = write_attributions(dec, t, d)
    assert per_write.shape == (B, H, T)
    o = dec.total()[:, t]
    read_out = o[..., d] if isinstance(d, int) else (o * d).sum(-1)
    torch.testing.assert_close(initial + per_write.sum(-1), read_out, **TOL)
    assert (per_write[..., t + 1:] == 0).all()


def test_bad_inputs_name_the_problem():
    q, k, v, beta, _ = inputs(1, 4, 2, 3, 3, with_state=False)
    with pytest.raises(UserError, match="beta"):
        delta_rule_contributions(q, k, v, beta[..., :1])
    with pytest.raises(UserError, match="n_beta"):
        srwm_contributions(q, torch.randn(2, srwm_rows(2, 3), 3, dtype=torch.float64), n_beta=2)
    with pytest.raises(UserError, match="rows"):
        srwm_contributions(q, torch.randn(2, 7, 3, dtype=torch.float64))
    dec = sum_rule_contributions(q, k, v)
    with pytest.raises(UserError, match="outside the sequence"):
        write_attributions(dec, 4, 0)
    with pytest.raises(UserError, match="channel"):
        write_attributions(dec, 0, 3)
