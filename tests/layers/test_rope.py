"""Rotary position embeddings in softmax attention (``transformer.rope``): scores that depend
only on the distance, a text read whole or in pieces (or after a cut cache) giving the same
outputs, gradients, and what the layer without them cannot see."""

import pytest
import torch

from fwp.errors import UserError
from fwp.layers import SoftmaxAttention


def layer(rope: bool = True, seed: int = 0) -> SoftmaxAttention:
    torch.manual_seed(seed)
    return SoftmaxAttention(16, 2, rope=rope).double()


def test_scores_depend_only_on_the_distance_between_query_and_key():
    attention = layer()
    q = torch.randn(1, 2, 5, 8, dtype=torch.float64)
    k = torch.randn(1, 2, 5, 8, dtype=torch.float64)
    near = attention.rotate(q, 3) @ attention.rotate(k, 0).transpose(-1, -2)
    far = attention.rotate(q, 103) @ attention.rotate(k, 100).transpose(-1, -2)
    torch.testing.assert_close(near, far)
    assert not torch.allclose(near, q @ k.transpose(-1, -2))


def test_whole_equals_pieces_and_a_cut_cache_equals_a_fresh_window():
    attention = layer()
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    whole, _ = attention(x)
    y1, state = attention(x[:, :5])
    y2, state = attention(x[:, 5:9], state)
    y3, _ = attention(x[:, 9:], state)
    torch.testing.assert_close(torch.cat([y1, y2, y3], dim=1), whole)
    # the cache cut to its last 3 keys (as FwpLM.trim_cache does) = the text from token 5 on
    _, state = attention(x[:, :8])
    cut = tuple(t[..., -3:, :] for t in state)
    after_cut, _ = attention(x[:, 8:], cut)
    fresh, _ = attention(x[:, 5:])
    torch.testing.assert_close(after_cut, fresh[:, 3:])


def test_gradients_through_the_rotation():
    attention = layer()
    x = torch.randn(1, 6, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: attention(t)[0], (x,))


def test_without_rope_a_prefix_in_any_order_gives_the_same_last_output():
    x = torch.randn(1, 4, 16, dtype=torch.float64)
    shuffled = x[:, [2, 0, 1, 3]]  # the same last token after the same three, reordered
    plain = layer(rope=False)
    torch.testing.assert_close(plain(x)[0][:, -1], plain(shuffled)[0][:, -1])
    rotary = layer()
    rotary.load_state_dict(plain.state_dict())
    assert not torch.allclose(rotary(x)[0][:, -1], rotary(shuffled)[0][:, -1])


def test_an_odd_head_dimension_keeps_its_last_dimension_unrotated():
    torch.manual_seed(0)
    attention = SoftmaxAttention(6, 2, rope=True).double()  # head dimension 3: one pair
    x = torch.randn(1, 2, 4, 3, dtype=torch.float64)
    rotated = attention.rotate(x, 5)
    torch.testing.assert_close(rotated[..., 2], x[..., 2])
    torch.testing.assert_close(rotated[..., :2].norm(dim=-1), x[..., :2].norm(dim=-1))
    text = torch.randn(1, 7, 6, dtype=torch.float64)
    first, state = attention(text[:, :3])
    rest, _ = attention(text[:, 3:], state)
    torch.testing.assert_close(torch.cat([first, rest], 1), attention(text)[0])


def test_a_base_of_one_is_refused():
    with pytest.raises(UserError, match="rope_base must be above 1"):
        SoftmaxAttention(16, 2, rope=True, rope_base=1.0)
