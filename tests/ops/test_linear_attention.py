import pytest
import torch

from fwp.ops import linear_attention
from tests.ops.helpers import assert_same_forward_and_grads, leaf

SHAPES = [(2, 1, 3, 5, 7), (2, 37, 1, 5, 7), (1, 100, 2, 6, 3)]  # B, T, H, K, V


@pytest.mark.parametrize("chunk_size", [16, 64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_matches_recurrent(shape, chunk_size, with_state):
    B, T, H, K, V = shape
    inputs = [leaf(B, T, H, K), leaf(B, T, H, K), leaf(B, T, H, V)]
    if with_state:
        inputs.append(leaf(B, H, K, V))

    def run(mode):
        def fn(q, k, v, s0=None):
            return linear_attention(
                q, k, v, initial_state=s0, output_final_state=True, mode=mode,
                chunk_size=chunk_size,
            )
        return fn

    assert_same_forward_and_grads(run("recurrent"), run("chunk"), inputs)


@pytest.mark.parametrize("mode", ["recurrent", "chunk"])
def test_gradcheck(mode):
    q, k, v, s0 = leaf(1, 5, 2, 3), leaf(1, 5, 2, 3), leaf(1, 5, 2, 2), leaf(1, 2, 3, 2)

    def fn(q, k, v, s0):
        o, s = linear_attention(
            q, k, v, initial_state=s0, output_final_state=True, mode=mode, chunk_size=2
        )
        return o, s

    assert torch.autograd.gradcheck(fn, (q, k, v, s0))


def test_duality_with_causal_attention_without_softmax():
    """Unnormalised linear attention = causal attention with scores q·k and no softmax."""
    q, k, v = leaf(2, 23, 3, 4), leaf(2, 23, 3, 4), leaf(2, 23, 3, 5)
    o, _ = linear_attention(q, k, v)
    scores = torch.einsum("bthd,bshd->bhts", q, k)
    scores = scores * torch.ones(23, 23, dtype=torch.bool).tril()
    attention = torch.einsum("bhts,bshv->bthv", scores, v)
    torch.testing.assert_close(o, attention)


def test_final_state_is_sum_of_outer_products():
    q, k, v = leaf(1, 9, 2, 3), leaf(1, 9, 2, 3), leaf(1, 9, 2, 4)
    _, state = linear_attention(q, k, v, output_final_state=True)
    torch.testing.assert_close(state, torch.einsum("bthk,bthv->bhkv", k, v))
    assert linear_attention(q, k, v)[1] is None


def test_bfloat16_keeps_float32_state():
    q, k, v = (torch.randn(2, 40, 2, 8) for _ in range(3))
    o32, s32 = linear_attention(q, k, v, output_final_state=True)
    o16, s16 = linear_attention(
        q.bfloat16(), k.bfloat16(), v.bfloat16(), output_final_state=True
    )
    assert o16.dtype == torch.bfloat16 and s16.dtype == torch.float32
    torch.testing.assert_close(o16.float(), o32, atol=0.1, rtol=0.05)
