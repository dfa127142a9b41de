import pytest
import torch
import torch.nn.functional as F

from fwp.errors import UserError
from fwp.ops import delta_rule
from fwp.ops.delta_product import delta_product
from tests.ops.helpers import assert_same_forward_and_grads, leaf, saved_bytes

SHAPES = [(2, 1, 3, 2, 5, 7), (2, 37, 1, 3, 5, 7), (1, 50, 2, 2, 6, 3)]  # B, T, H, n_h, K, V


def normalized(x):
    return F.normalize(x, dim=-1)


def inputs_for(B, T, H, n_h, K, V, with_state):
    inputs = [
        leaf(B, T, H, K), leaf(B, T, H, n_h, K, fn=normalized), leaf(B, T, H, n_h, V),
        leaf(B, T, H, n_h, fn=lambda x: 2 * torch.sigmoid(x)),  # β ∈ (0, 2) as in the paper
    ]
    if with_state:
        inputs.append(leaf(B, H, K, V))
    return inputs


def run(mode, chunk_size=64):
    def fn(q, k, v, beta, s0=None):
        return delta_product(
            q, k, v, beta, initial_state=s0, output_final_state=True, mode=mode,
            chunk_size=chunk_size,
        )
    return fn


@pytest.mark.parametrize("chunk_size", [7, 64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_matches_recurrent(shape, chunk_size, with_state):
    assert_same_forward_and_grads(
        run("recurrent"), run("chunk", chunk_size), inputs_for(*shape, with_state)
    )


@pytest.mark.parametrize("mode", ["recurrent", "chunk"])
def test_gradcheck(mode):
    inputs = inputs_for(1, 3, 2, 2, 3, 2, with_state=True)
    assert torch.autograd.gradcheck(run(mode, chunk_size=4), tuple(inputs), fast_mode=True)


@pytest.mark.parametrize("mode", ["recurrent", "chunk"])
def test_one_micro_step_is_the_delta_rule(mode):
    q, k, v, beta, s0 = (t.detach() for t in inputs_for(2, 19, 2, 1, 4, 3, with_state=True))
    expected = delta_rule(
        q, k[:, :, :, 0], v[:, :, :, 0], beta[..., 0], initial_state=s0, output_final_state=True
    )
    got = run(mode, chunk_size=8)(q, k, v, beta, s0)
    for e, o in zip(expected, got, strict=True):
        torch.testing.assert_close(o, e)


def test_micro_steps_are_delta_rule_steps_read_once_per_token():
    """n_h micro-steps per token = a delta rule over T·n_h steps, read every n_h-th step."""
    q, k, v, beta = (t.detach() for t in inputs_for(1, 6, 2, 3, 4, 3, with_state=False))
    o, s = delta_product(q, k, v, beta, output_final_state=True, mode="recurrent")
    state = torch.zeros(1, 2, 4, 3, dtype=q.dtype)
    for t in range(6):
        for j in range(3):
            _, state = delta_rule(
                q[:, t:t + 1], k[:, t:t + 1, :, j], v[:, t:t + 1, :, j], beta[:, t:t + 1, :, j],
                initial_state=state, output_final_state=True,
            )
        torch.testing.assert_close(o[:, t], torch.einsum("bhk,bhkv->bhv", q[:, t], state))
    torch.testing.assert_close(s, state)


def test_householder_product_with_unit_keys_and_beta_two_is_a_reflection():
    """With β = 2 and unit keys, I − 2kkᵀ is a reflection: the state's norm is preserved."""
    q, k, v, beta, s0 = (t.detach() for t in inputs_for(1, 8, 1, 2, 4, 4, with_state=True))
    k_old = torch.einsum("bthjk,bhkv->bthjv", k, s0)
    _, s = delta_product(
        q[:, :1], k[:, :1], k_old[:, :1], torch.full_like(beta[:, :1], 2.0), initial_state=s0,
        output_final_state=True,
    )
    # v = Sᵀk with β = 2 writes S ← (I − 2kkᵀ)S + 2k(Sᵀk)ᵀ = S: nothing changes ...
    torch.testing.assert_close(s, s0)
    _, s = delta_product(
        q[:, :1], k[:, :1], torch.zeros_like(v[:, :1]), torch.full_like(beta[:, :1], 2.0),
        initial_state=s0, output_final_state=True,
    )
    # ... and with v = 0 the state is reflected twice: its Frobenius norm is kept.
    torch.testing.assert_close(s.norm(), s0.norm())


def test_chunk_form_does_not_keep_a_state_per_token():
    B, H, n_h, K, V = 1, 1, 2, 64, 64

    def cost(mode, T):
        inputs = inputs_for(B, T, H, n_h, K, V, with_state=False)
        return saved_bytes(lambda: run(mode, 16)(*inputs))

    state_bytes = B * H * K * V * 8
    per_token = {m: (cost(m, 128) - cost(m, 32)) / 96 for m in ("recurrent", "chunk")}
    assert per_token["recurrent"] >= n_h * state_bytes  # the reference keeps every micro-state
    assert per_token["chunk"] < 0.5 * state_bytes


def test_bad_input_is_explained():
    q, k, v, beta = (t.detach() for t in inputs_for(1, 4, 2, 2, 3, 3, with_state=False))
    with pytest.raises(UserError, match=r"k must be \[B, T, H, n_h, K\]"):
        delta_product(q, k[:, :, :, 0], v, beta)
    with pytest.raises(UserError, match=r"q must be \[B, T, H, K\]"):
        delta_product(q[:, :3], k, v, beta)
    with pytest.raises(UserError, match=r"beta must be \[B, T, H, n_h\]"):
        delta_product(q, k, v, beta[..., :1])
    with pytest.raises(UserError, match=r"v must be \[B, T, H, n_h, V\]"):
        delta_product(q, k, v[:, :, :, :1], beta)
    with pytest.raises(UserError, match="n_h = 0"):
        delta_product(q, k[:, :, :, :0], v[:, :, :, :0], beta[..., :0])
    with pytest.raises(UserError, match="initial_state must be"):
        delta_product(q, k, v, beta, initial_state=torch.zeros(1, 2, 3, 2, dtype=q.dtype))
    with pytest.raises(UserError, match="has dtype torch.float32"):
        delta_product(q, k, v, beta.float())
