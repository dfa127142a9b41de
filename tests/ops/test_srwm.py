import pytest
import torch

from fwp.errors import UserError
from fwp.ops import srwm, srwm_rows
from tests.ops.helpers import assert_same_forward_and_grads, leaf, saved_bytes


def make_W0(H, D, d_out, n_beta, batch=None):
    shape = (H, srwm_rows(d_out, D, n_beta), D) if batch is None else (
        batch, H, srwm_rows(d_out, D, n_beta), D
    )
    return leaf(*shape, fn=lambda w: w / D**0.5)


@pytest.mark.parametrize("n_beta", [1, 4])
@pytest.mark.parametrize("input_softmax", [False, True])
@pytest.mark.parametrize("shape", [(2, 1, 3, 5, 5), (2, 37, 1, 5, 7), (1, 100, 2, 6, 3)])
@pytest.mark.parametrize("per_sequence_W0", [False, True])
def test_scan_matches_reference(shape, n_beta, input_softmax, per_sequence_W0):
    B, T, H, D, d_out = shape
    x = leaf(B, T, H, D)
    W0 = make_W0(H, D, d_out, n_beta, batch=B if per_sequence_W0 else None)

    def run(mode):
        return lambda x, W0: srwm(x, W0, n_beta=n_beta, input_softmax=input_softmax, d_out=d_out,
                                  mode=mode)

    assert_same_forward_and_grads(run("recurrent"), run("scan"), [x, W0])


@pytest.mark.parametrize("mode", ["recurrent", "scan"])
@pytest.mark.parametrize("n_beta", [1, 4])
def test_gradcheck(mode, n_beta):
    x, W0 = leaf(2, 4, 2, 3), make_W0(2, 3, 2, n_beta)
    assert torch.autograd.gradcheck(
        lambda x, W0: srwm(x, W0, n_beta=n_beta, input_softmax=True, d_out=2, mode=mode), (x, W0)
    )


def test_one_step_by_hand():
    """Eq. 2–4 for one step of one head, written out without the operator."""
    D, d_out = 3, 2
    x = torch.randn(1, 1, 1, D, dtype=torch.float64)
    W0 = torch.randn(1, srwm_rows(d_out, D), D, dtype=torch.float64)
    y, W1 = srwm(x, W0, d_out=d_out)
    W, x1 = W0[0], x[0, 0, 0]
    out = W @ x1
    y_ref, k, q, b = out[:d_out], out[d_out : d_out + D], out[d_out + D : d_out + 2 * D], out[-1]
    v, v_bar = W @ torch.softmax(q, 0), W @ torch.softmax(k, 0)
    W1_ref = W + torch.sigmoid(b) * torch.outer(v - v_bar, torch.softmax(k, 0))
    torch.testing.assert_close(y[0, 0, 0], y_ref)
    torch.testing.assert_close(W1[0, 0], W1_ref)


def test_running_in_pieces_equals_running_at_once():
    x, W0 = leaf(2, 30, 2, 4), make_W0(2, 4, 4, 1)
    y, W = srwm(x, W0)
    y1, W_mid = srwm(x[:, :13], W0)
    y2, W_end = srwm(x[:, 13:], W_mid)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y)
    torch.testing.assert_close(W_end, W)


def test_scan_saves_vectors_not_matrices():
    """Saved bytes grow like T·(R + D) per head for the scan, like T·R·D for the reference."""
    B, H, D = 2, 2, 16
    W0 = make_W0(H, D, D, 1)
    R = W0.shape[1]

    def growth(mode):
        sizes = [saved_bytes(lambda T=T: srwm(leaf(B, T, H, D), W0, mode=mode)) for T in (50, 100)]
        return (sizes[1] - sizes[0]) / 50 / (B * H * 8)  # float64 numbers per step and head

    scan, reference = growth("scan"), growth("recurrent")
    assert scan <= 2 * (R + 4 * D), scan
    assert reference >= R * D, reference


def test_bfloat16_input_float32_state():
    x, W0 = torch.randn(2, 20, 2, 8), torch.randn(2, srwm_rows(8, 8), 8) / 8**0.5
    y32, W32 = srwm(x, W0)
    y16, W16 = srwm(x.bfloat16(), W0)
    assert y16.dtype == torch.bfloat16 and W16.dtype == torch.float32
    torch.testing.assert_close(y16.float(), y32, atol=0.1, rtol=0.05)


def test_bad_W0_shape_is_explained():
    x = torch.randn(2, 5, 3, 4)
    with pytest.raises(UserError, match="W0 must be"):
        srwm(x, torch.randn(2, srwm_rows(4, 4), 4))
    with pytest.raises(UserError, match="too few rows"):
        srwm(x, torch.randn(3, 2 * 4 + 1, 4))
    with pytest.raises(UserError, match="n_beta"):
        srwm(x, torch.randn(3, srwm_rows(4, 4, 2), 4), n_beta=2)


def test_W0_built_for_another_width_or_n_beta_is_refused():
    """R = d_out + 2·D + n_beta exactly: one row too many, or n_beta = 4 on rows built for 1,
    would otherwise silently change the width of y."""
    x = torch.randn(2, 5, 3, 4)
    with pytest.raises(UserError, match="R = 14 rows.*= 13.*pass d_out=5"):
        srwm(x, torch.randn(3, srwm_rows(4, 4) + 1, 4))
    with pytest.raises(UserError, match=r"R = 13 rows.*4 \+ 2·4 \+ 4 = 16.*rows of n_beta=1"):
        srwm(x, torch.randn(3, srwm_rows(4, 4, 1), 4), n_beta=4)
    y, _ = srwm(x, torch.randn(3, srwm_rows(5, 4), 4), d_out=5)
    assert y.shape == (2, 5, 3, 5)


RATES_IN_ZERO_TWO = [
    (2, 1, 3, 5, 5, 1, False), (2, 37, 1, 5, 7, 4, True), (1, 23, 2, 6, 3, 4, False),
]


def by_hand_first_step(x, W0, n_beta, rate_scale):
    """W_1 = W_0 + s σ(b) (W_0 φ(q) − W_0 φ(k)) ⊗ φ(k), written out (one rate, n_beta = 1)."""
    D = x.shape[-1]
    out = torch.einsum("hrd,bhd->bhr", W0, x[:, 0])
    k, q, b = out[..., -2 * D - 1 : -D - 1], out[..., -D - 1 : -1], out[..., -1:]
    pk, pq = torch.softmax(k, -1), torch.softmax(q, -1)
    u = rate_scale * torch.sigmoid(b) * torch.einsum("hrd,bhd->bhr", W0, pq - pk)
    return W0 + u.unsqueeze(-1) * pk.unsqueeze(-2)


@pytest.mark.parametrize("case", RATES_IN_ZERO_TWO, ids=str)
def test_rates_in_zero_two_scan_matches_reference(case):
    """rate_scale = 2 (rates 2σ(b) ∈ (0, 2)): the scan's reverse rebuild and its ∂b."""
    B, T, H, D, d_out, n_beta, input_softmax = case
    x, W0 = leaf(B, T, H, D), make_W0(H, D, d_out, n_beta)
    with torch.no_grad():
        W0[:, -n_beta:] += 2.0  # σ ≈ 0.9: rates ≈ 1.8, above 1

    def run(mode):
        return lambda x, W0: srwm(x, W0, n_beta=n_beta, input_softmax=input_softmax,
                                  d_out=d_out, rate_scale=2.0, mode=mode)

    assert_same_forward_and_grads(run("recurrent"), run("scan"), [x, W0])
    assert torch.autograd.gradcheck(
        lambda x, W0: srwm(x, W0, n_beta=n_beta, d_out=2, rate_scale=2.0, mode="scan"),
        (leaf(1, 3, 1, 3), make_W0(1, 3, 2, n_beta)),
    )


def test_rate_scale_is_the_written_rule_and_checked():
    x, W0 = leaf(2, 1, 2, 4), make_W0(2, 4, 4, 1)
    for scale in (1.0, 2.0):
        _, W1 = srwm(x, W0, rate_scale=scale, mode="recurrent")
        torch.testing.assert_close(W1, by_hand_first_step(x, W0, 1, scale))
    with pytest.raises(UserError, match="rate_scale"):
        srwm(x, W0, rate_scale=3.0)
