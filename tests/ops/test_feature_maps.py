import pytest
import torch

from fwp.errors import UserError
from fwp.ops import FEATURE_MAPS, dpfp, feature_dim, get_feature_map


@pytest.mark.parametrize("name", sorted(FEATURE_MAPS))
def test_every_map_has_the_announced_size(name):
    x = torch.randn(3, 7, 5)
    assert get_feature_map(name)(x).shape[-1] == feature_dim(name, 5)


def test_positive_maps_are_positive():
    x = torch.randn(100, 6) * 5
    for name in ("elu+1", "elu+1_sum", "softmax"):
        assert (get_feature_map(name)(x) > 0).all()
    torch.testing.assert_close(get_feature_map("elu+1_sum")(x).sum(-1), torch.ones(100))
    torch.testing.assert_close(get_feature_map("l2")(x).norm(dim=-1), torch.ones(100))


def test_dpfp_by_hand():
    x = torch.tensor([1.0, -2.0])
    r = torch.tensor([1.0, 0.0, 0.0, 2.0])  # [relu(x), relu(-x)]
    torch.testing.assert_close(dpfp(x, 1), r * torch.roll(r, 1))
    torch.testing.assert_close(dpfp(x, 2), torch.cat([r * torch.roll(r, 1), r * torch.roll(r, 2)]))


def test_unknown_map_is_named():
    with pytest.raises(UserError, match="unknown feature map 'relu'"):
        get_feature_map("relu")
