import pytest
import torch
import torch.nn.functional as F

from fwp.ops import delta_rule
from tests.ops.helpers import assert_same_forward_and_grads, leaf

SHAPES = [(2, 1, 3, 5, 7), (2, 37, 1, 5, 7), (1, 100, 2, 6, 3)]  # B, T, H, K, V


def normalized(x):
    return F.normalize(x, dim=-1)


@pytest.mark.parametrize("chunk_size", [16, 64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_matches_recurrent(shape, chunk_size, with_state):
    B, T, H, K, V = shape
    inputs = [
        leaf(B, T, H, K), leaf(B, T, H, K, fn=normalized), leaf(B, T, H, V),
        leaf(B, T, H, fn=torch.sigmoid),
    ]
    if with_state:
        inputs.append(leaf(B, H, K, V))

    def run(mode):
        def fn(q, k, v, beta, s0=None):
            return delta_rule(
                q, k, v, beta, initial_state=s0, output_final_state=True, mode=mode,
                chunk_size=chunk_size,
            )
        return fn

    assert_same_forward_and_grads(run("recurrent"), run("chunk"), inputs)


@pytest.mark.parametrize("mode", ["recurrent", "chunk"])
def test_gradcheck(mode):
    q, k, v = leaf(1, 5, 2, 3), leaf(1, 5, 2, 3, fn=normalized), leaf(1, 5, 2, 2)
    beta, s0 = leaf(1, 5, 2, fn=torch.sigmoid), leaf(1, 2, 3, 2)

    def fn(q, k, v, beta, s0):
        return delta_rule(
            q, k, v, beta, initial_state=s0, output_final_state=True, mode=mode, chunk_size=2
        )

    assert torch.autograd.gradcheck(fn, (q, k, v, beta, s0))


def test_beta_one_with_unit_key_overwrites_the_value():
    """With β = 1 and a unit key, reading with that key returns exactly the new value."""
    k = normalized(torch.randn(1, 6, 1, 4, dtype=torch.float64))
    v = torch.randn(1, 6, 1, 3, dtype=torch.float64)
    beta = torch.ones(1, 6, 1, dtype=torch.float64)
    o, _ = delta_rule(k, k, v, beta)
    torch.testing.assert_close(o, v)


def test_beta_zero_writes_nothing():
    q, k, v = (torch.randn(2, 11, 2, 4, dtype=torch.float64) for _ in range(3))
    s0 = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    o, s = delta_rule(
        q, k, v, torch.zeros(2, 11, 2, dtype=torch.float64), initial_state=s0,
        output_final_state=True,
    )
    torch.testing.assert_close(s, s0)
    torch.testing.assert_close(o, torch.einsum("bthk,bhkv->bthv", q, s0))
