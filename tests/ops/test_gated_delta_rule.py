import pytest
import torch
import torch.nn.functional as F

from fwp.errors import UserError
from fwp.ops import delta_rule
from fwp.ops.gated_delta_rule import gated_delta_rule
from tests.ops.helpers import assert_same_forward_and_grads, leaf, saved_bytes

SHAPES = [(2, 1, 3, 5, 7), (2, 37, 1, 5, 7), (1, 100, 2, 6, 3)]  # B, T, H, K, V


def normalized(x):
    return F.normalize(x, dim=-1)


def log_decay(x):
    return F.logsigmoid(2.0 * x)  # α = σ(2x): from strong decay to almost none


def inputs_for(B, T, H, K, V, with_state):
    inputs = [
        leaf(B, T, H, K), leaf(B, T, H, K, fn=normalized), leaf(B, T, H, V),
        leaf(B, T, H, fn=torch.sigmoid), leaf(B, T, H, fn=log_decay),
    ]
    if with_state:
        inputs.append(leaf(B, H, K, V))
    return inputs


def run(mode, chunk_size=64):
    def fn(q, k, v, beta, g, s0=None):
        return gated_delta_rule(
            q, k, v, beta, g, initial_state=s0, output_final_state=True, mode=mode,
            chunk_size=chunk_size,
        )
    return fn


@pytest.mark.parametrize("chunk_size", [16, 64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_matches_recurrent(shape, chunk_size, with_state):
    assert_same_forward_and_grads(
        run("recurrent"), run("chunk", chunk_size), inputs_for(*shape, with_state)
    )


def test_strong_decay_stays_finite_in_long_chunks():
    """Γ_i underflows to 0 over a 64-step chunk with α ≈ e⁻⁵; no inf/NaN in values or grads."""
    q, k, v, beta, g = inputs_for(1, 64, 1, 4, 3, with_state=False)
    g = torch.full_like(g, -5.0).requires_grad_()
    assert_same_forward_and_grads(run("recurrent"), run("chunk"), [q, k, v, beta, g])


@pytest.mark.parametrize("mode", ["recurrent", "chunk"])
def test_gradcheck(mode):
    inputs = inputs_for(1, 5, 2, 3, 2, with_state=True)
    assert torch.autograd.gradcheck(run(mode, chunk_size=2), tuple(inputs), fast_mode=True)


@pytest.mark.parametrize("mode", ["recurrent", "chunk"])
def test_no_decay_is_the_delta_rule(mode):
    q, k, v, beta, g, s0 = (t.detach() for t in inputs_for(2, 19, 2, 4, 3, with_state=True))
    expected = delta_rule(q, k, v, beta, initial_state=s0, output_final_state=True)
    got = gated_delta_rule(
        q, k, v, beta, torch.zeros_like(g), initial_state=s0, output_final_state=True,
        mode=mode, chunk_size=8,
    )
    for e, o in zip(expected, got, strict=True):
        torch.testing.assert_close(o, e)


def test_beta_zero_only_decays():
    q, k, v, beta, g, s0 = (t.detach() for t in inputs_for(1, 9, 2, 4, 3, with_state=True))
    o, s = gated_delta_rule(
        q, k, v, torch.zeros_like(beta), g, initial_state=s0, output_final_state=True
    )
    decay = g.sum(dim=1).exp()[..., None, None]
    torch.testing.assert_close(s, decay * s0)



def test_chunk_form_does_not_keep_a_state_per_step():
    B, H, K, V = 1, 2, 64, 64

    def cost(mode, T):
        inputs = inputs_for(B, T, H, K, V, with_state=False)
        return saved_bytes(lambda: run(mode, 16)(*inputs))

    state_bytes = B * H * K * V * 8
    per_step = {m: (cost(m, 256) - cost(m, 64)) / 192 for m in ("recurrent", "chunk")}
    assert per_step["recurrent"] >= state_bytes  # the reference keeps every S_t
    assert per_step["chunk"] < 0.5 * state_bytes


def test_bad_input_is_explained():
    q, k, v, beta, g = (t.detach() for t in inputs_for(1, 4, 2, 3, 3, with_state=False))
    with pytest.raises(UserError, match=r"g must be \[B, T, H\]"):
        gated_delta_rule(q, k, v, beta, g[:, :3])
    with pytest.raises(UserError, match="g has dtype"):
        gated_delta_rule(q, k, v, beta, g.long())
    with pytest.raises(UserError, match="g is torch.float32"):
        gated_delta_rule(q, k, v, beta, g.float())
    with pytest.raises(UserError, match="unknown mode"):
        gated_delta_rule(q, k, v, beta, g, mode="fused")
    with pytest.raises(UserError, match=r"beta must be \[B, T, H\]"):
        gated_delta_rule(q, k, v, beta[..., :1], g)
