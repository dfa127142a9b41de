import pytest
import torch

from fwp.ops import delta_rule, linear_attention, srwm, srwm_rows


def qkv(B=2, T=5, H=3, K=4, V=6, dtype=torch.float32):
    return (torch.randn(B, T, H, K, dtype=dtype), torch.randn(B, T, H, K, dtype=dtype),
            torch.randn(B, T, H, V, dtype=dtype))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda q, k, v: (q[0], k, v), r"q must be \[B, T, H, K\]"),
        (lambda q, k, v: (q, k[..., :3], v), "q and k must have the same shape"),
        (lambda q, k, v: (q, k, v[:, :4]), "v must be"),
        (lambda q, k, v: (q, k, v.double()), "dtype"),
        (lambda q, k, v: (q, k, v.long()), "floating point"),
        (lambda q, k, v: (q[:, :0], k[:, :0], v[:, :0]), "empty"),
    ],
)
def test_bad_inputs_raise_value_error(change, message):
    q, k, v = change(*qkv())
    with pytest.raises(ValueError, match=message):
        linear_attention(q, k, v)
    with pytest.raises(ValueError, match=message):
        delta_rule(q, k, v, torch.rand(q.shape[:3]))


def test_bad_state_beta_mode_chunk():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="initial_state must be"):
        linear_attention(q, k, v, initial_state=torch.zeros(2, 3, 6, 4))
    with pytest.raises(ValueError, match="beta must be"):
        delta_rule(q, k, v, torch.rand(2, 5))
    with pytest.raises(ValueError, match="unknown mode 'fast'"):
        delta_rule(q, k, v, torch.rand(2, 5, 3), mode="fast")
    with pytest.raises(ValueError, match="chunk_size"):
        linear_attention(q, k, v, chunk_size=0)
    with pytest.raises(ValueError, match="x must be"):
        srwm(torch.randn(5, 3, 4), torch.randn(3, srwm_rows(4, 4), 4))
