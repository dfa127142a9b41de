import pytest
import torch

from fwp.errors import UserError
from fwp.layers import (
    LAYERS,
    SRWM,
    Block,
    DeltaNet,
    LayerStack,
    LinearAttention,
    build_layer,
    clone_state,
    detach_state,
    map_state,
    repeat_state,
)

CORE_LAYERS = ["linear", "deltanet", "srwm", "transformer", "lstm"]


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_pieces_equal_whole_and_gradients_flow(name):
    stack = LayerStack([name, name], d_model=24, n_heads=3, d_ff=48).double().eval()
    x = torch.randn(2, 19, 24, dtype=torch.float64, requires_grad=True)
    y, _ = stack(x)
    y1, state = stack(x[:, :8])
    y2, _ = stack(x[:, 8:], clone_state(state))
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y)
    y.square().sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in stack.parameters())


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_states_are_batch_first_and_repeat_per_sequence(name):
    """Continuing a repeated state with r inputs per sequence equals r separate continuations."""
    stack = LayerStack([name, name], d_model=24, n_heads=3, d_ff=48).double().eval()
    _, state = stack(torch.randn(3, 6, 24, dtype=torch.float64))
    map_state(lambda t: assert_batch_first(t, 3), state)
    queries = torch.randn(3, 4, 1, 24, dtype=torch.float64)
    together, _ = stack(queries.flatten(0, 1), repeat_state(state, 4))
    for r in range(4):
        alone, _ = stack(queries[:, r], clone_state(state))
        torch.testing.assert_close(together.unflatten(0, (3, 4))[:, r], alone)


def assert_batch_first(t: torch.Tensor, batch: int) -> torch.Tensor:
    assert t.shape[0] == batch, f"state tensor {tuple(t.shape)} does not have the batch first"
    return t


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layers_are_causal(name):
    """Every registered layer: a change at step 7 leaves the outputs before it alone."""
    layer = LAYERS[name](16, 2)
    x = torch.randn(1, 12, 16)
    x2 = x.clone()
    x2[:, 7:] += torch.randn(1, 5, 16)
    torch.testing.assert_close(layer(x)[0][:, :7], layer(x2)[0][:, :7])


def test_normalised_linear_attention_is_weighted_average_of_values():
    layer = LinearAttention(8, 1, normalize=True).double()
    layer.out.weight.data = torch.eye(8, dtype=torch.float64)
    x = torch.randn(1, 10, 8, dtype=torch.float64)
    y, state = layer(x)
    assert state.shape == (1, 1, 8, 9)  # value column of ones carries the normaliser
    q, k, v = layer.qkv(x).chunk(3, dim=-1)
    phi_q, phi_k = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    weights = (phi_q @ phi_k.transpose(-1, -2)).tril()
    expected = weights @ v / (weights.sum(-1, keepdim=True) + layer.eps)
    torch.testing.assert_close(y, expected)


def test_srwm_layer_options_and_init():
    layer = SRWM(32, 4, n_beta=4, beta_init_mean=-2.0)
    assert layer.W0.shape == (4, 3 * 8 + 4, 8)
    assert abs(layer.W0[:, -4:].mean().item() + 2.0) < 0.3
    assert abs(layer.W0[:, :-4].std().item() - 8**-0.5) < 0.05
    y, state = layer(torch.randn(3, 5, 32))
    assert y.shape == (3, 5, 32) and state.shape == (3, 4, 28, 8)


def test_srwm_key_identity_adds_scaled_identity_to_the_key_block_only():
    torch.manual_seed(0)
    plain = SRWM(32, 4, n_beta=4).W0
    torch.manual_seed(0)
    shifted = SRWM(32, 4, n_beta=4, key_identity=3.0).W0
    D = 8
    difference = shifted[:, D : 2 * D] - plain[:, D : 2 * D]
    torch.testing.assert_close(difference, 3.0 * torch.eye(D).expand(4, D, D))
    torch.testing.assert_close(shifted[:, :D], plain[:, :D])
    torch.testing.assert_close(shifted[:, 2 * D :], plain[:, 2 * D :])


def test_deltanet_beta_in_unit_interval_and_state_helpers():
    layer = DeltaNet(16, 2)
    _, state = layer(torch.randn(2, 6, 16))
    copy = clone_state([state, (state, None)])
    assert copy[0] is not state and torch.equal(copy[0], state)
    assert copy[1][1] is None
    assert not detach_state(state).requires_grad and state.requires_grad


def test_normed_residual_option():
    x = torch.randn(2, 5, 16)
    block = Block("deltanet", 16, 2, 32, residual="normed")
    h = block.norm(x)
    out, _ = block.layer(h)
    torch.testing.assert_close(block(x)[0], block.ff(h + out))


def test_normed_skip_residual_feeds_the_raw_input():
    """The public few-shot SRWM block: LN(x) + Drop(layer(x))."""
    x = 3 * torch.randn(2, 5, 16)
    block = Block("srwm", 16, 2, 32, residual="normed_skip")
    out, _ = block.layer(x)
    torch.testing.assert_close(block(x)[0], block.ff(block.norm(x) + out))
    normed, _ = block.layer(block.norm(x))
    assert not torch.allclose(out, normed)


def test_bad_configuration_is_explained():
    with pytest.raises(UserError, match="unknown layer 'mamba'"):
        LayerStack(["mamba"], d_model=16, n_heads=2, d_ff=32)
    with pytest.raises(UserError, match="not divisible"):
        DeltaNet(30, 4)
    with pytest.raises(UserError, match="bad options for layer 'srwm'"):
        LayerStack(["srwm"], 16, 2, 32, layer_options={"srwm": {"nbeta": 4}})
    with pytest.raises(UserError, match="residual"):
        Block("srwm", 16, 2, 32, residual="post")


@pytest.mark.parametrize("name", ["linear", "deltanet", "srwm", "deltaproduct", "gated_deltanet"])
def test_read_inputs_are_what_the_operator_reads(name):
    """``read_inputs`` gives the operator's inputs ``[B, T, H, ...]``: the layer's output is the
    operator run on them, then the output projection (gated_deltanet adds its decay)."""
    from fwp.ops import delta_product, delta_rule, linear_attention, srwm

    torch.manual_seed(0)
    layer = build_layer(name, 12, 3).double()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    inputs = layer.read_inputs(x)
    assert all(t.shape[:3] == (2, 5, 3) for t in inputs)
    if name == "gated_deltanet":
        return
    if name == "linear":
        q, k, v = inputs
        o, _ = linear_attention(q, k, torch.cat([v, torch.ones_like(v[..., :1])], -1))
        o = o[..., :-1] / (o[..., -1:] + layer.eps)
    elif name == "srwm":
        o, _ = srwm(*inputs, layer.W0, n_beta=layer.n_beta)
    else:
        o, _ = {"deltanet": delta_rule, "deltaproduct": delta_product}[name](*inputs)
    torch.testing.assert_close(layer(x)[0], layer.out(o.flatten(-2)))


def test_layer_options_are_checked_against_the_constructor():
    from fwp.layers import check_layer_options, layer_option_names

    assert "n_beta" in layer_option_names("srwm")
    check_layer_options("srwm", {"n_beta": 4, "key_identity": 3.0})
    with pytest.raises(UserError, match="layer deltanet takes no option 'n_beta'; its options:"):
        check_layer_options("deltanet", {"n_beta": 4})
    with pytest.raises(UserError, match="unknown layer"):
        check_layer_options("nope", {})
