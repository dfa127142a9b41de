import pytest
import torch

from fwp.errors import UserError
from fwp.layers import LAYERS, DeltaMLP, DeltaNet, Mesa, build_layer

NAMES = ["delta_mlp", "mesa"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("T", "n_heads", "head_dim"), [(1, 2, 5), (37, 1, 6), (23, 3, 3)])
def test_fast_form_matches_reference(name, T, n_heads, head_dim):
    torch.manual_seed(T)
    options = {"chunk_size": 16} if name == "mesa" else {"checkpoint_every": 5}
    fast = build_layer(name, 12, n_heads, head_dim=head_dim, **options).double()
    slow = build_layer(name, 12, n_heads, head_dim=head_dim, mode="recurrent").double()
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, T, 12, dtype=torch.float64, requires_grad=True)
    y_fast, s_fast = fast(x)
    y_slow, s_slow = slow(x)
    torch.testing.assert_close(y_fast, y_slow)
    for a, b in zip(s_fast, s_slow):
        torch.testing.assert_close(a, b)
    g_fast = torch.autograd.grad(y_fast.square().sum(), [x, *fast.parameters()])
    g_slow = torch.autograd.grad(y_slow.square().sum(), [x, *slow.parameters()])
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_layers_are_causal(name):
    layer = LAYERS[name](16, 2)
    x = torch.randn(1, 12, 16)
    x2 = x.clone()
    x2[:, 7:] += torch.randn(1, 5, 16)
    torch.testing.assert_close(layer(x)[0][:, :7], layer(x2)[0][:, :7])


def test_one_identity_layer_delta_mlp_is_deltanet():
    """depth=1, identity activation, the same φ and weights: the DeltaNet layer, exactly."""
    torch.manual_seed(0)
    delta = DeltaNet(12, 3, feature_map="l2").double()
    mlp = DeltaMLP(12, 3, depth=1, activation="identity", feature_map="l2").double()
    assert all(torch.equal(w, torch.zeros_like(w)) for w in mlp.W0)  # an empty memory
    for name in ("qkv", "beta", "out"):
        getattr(mlp, name).load_state_dict(getattr(delta, name).state_dict())
    x = torch.randn(2, 19, 12, dtype=torch.float64)
    y, (S,) = mlp(x)
    y_ref, S_ref = delta(x)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(S, S_ref, rtol=0, atol=1e-12)


def test_mesa_layer_converges_to_the_exact_solve():
    torch.manual_seed(0)
    cg = Mesa(12, 2, cg_steps=10).double()
    exact = Mesa(12, 2, mode="exact").double()
    exact.load_state_dict(cg.state_dict())
    x = torch.randn(2, 30, 12, dtype=torch.float64)
    torch.testing.assert_close(cg(x)[0], exact(x)[0])


def test_mesa_ridge_and_gates_start_as_documented():
    layer = Mesa(16, 2)
    *_, g, lamb = layer.read_inputs(torch.zeros(1, 1, 16))
    torch.testing.assert_close(lamb, torch.ones(2, 8))
    torch.testing.assert_close(g.exp(), torch.sigmoid(torch.tensor(3.0)).expand(1, 1, 2))


def test_bad_options_are_explained():
    with pytest.raises(UserError, match="depth"):
        DeltaMLP(16, 2, depth=0)
    with pytest.raises(UserError, match="unknown activation"):
        DeltaMLP(16, 2, activation="swish")
    with pytest.raises(UserError, match="size-preserving"):
        DeltaMLP(16, 2, feature_map="dpfp2")
    with pytest.raises(UserError, match="unknown mode"):
        Mesa(16, 2, mode="chunk")
    with pytest.raises(UserError, match="lambda_init > lambda_min"):
        Mesa(16, 2, lambda_init=0.1)
