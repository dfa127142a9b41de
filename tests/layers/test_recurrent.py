import math

import pytest
import torch

from fwp.errors import UserError
from fwp.layers import LAYERS, DeltaNet, build_layer, clone_state, detach_state
from fwp.layers.recurrent import (
    DeltaLSTM,
    DeltaProduct,
    DeltaRNN,
    GatedDeltaNet,
    RecurrentDeltaNet,
)
from fwp.ops import delta_rule
from tests.ops.helpers import grads_of, saved_bytes

SEQUENTIAL = ["rec_deltanet", "delta_rnn", "delta_lstm"]
NEW_LAYERS = [*SEQUENTIAL, "deltadelta", "srdelta", "deltaproduct", "gated_deltanet"]


def twin(name, d_model, n_heads, **options):
    """The same layer (same weights) in the fast form and in the reference form."""
    fast = build_layer(name, d_model, n_heads, **options).double()
    reference = build_layer(name, d_model, n_heads, mode="recurrent", **options).double()
    reference.load_state_dict(fast.state_dict())
    return fast, reference


@pytest.mark.parametrize("name", NEW_LAYERS)
@pytest.mark.parametrize(("T", "n_heads", "head_dim"), [(1, 2, 5), (37, 1, 6), (23, 3, 3)])
def test_fast_form_matches_reference(name, T, n_heads, head_dim):
    """Forward, carried state and every gradient, from a non-zero state, float64."""
    fast, reference = twin(name, 10, n_heads, head_dim=head_dim)
    with torch.no_grad():
        _, state = reference(torch.randn(2, 4, 10, dtype=torch.float64))
    x = torch.randn(2, T, 10, dtype=torch.float64, requires_grad=True)
    results = []
    for layer in (fast, reference):
        y, final = layer(x, clone_state(state))
        flat = [y, *(final if isinstance(final, tuple) else (final,))]
        # With a state given, SR-Delta continues from it and does not read its W0.
        used = [x, *(p for name, p in layer.named_parameters() if state is None or name != "W0")]
        results.append([*flat, *grads_of(flat, used)])
    for f, r in zip(*results, strict=True):
        torch.testing.assert_close(f, r, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("name", NEW_LAYERS)
def test_no_grad_run_and_detached_state_match(name):
    layer = LAYERS[name](12, 2).double()
    x = torch.randn(2, 9, 12, dtype=torch.float64)
    y, state = layer(x)
    with torch.no_grad():
        y_eval, state_eval = layer(x)
    torch.testing.assert_close(y_eval, y)
    for a, b in zip(detach_state(state), state_eval, strict=True):
        assert not a.requires_grad
        torch.testing.assert_close(a, b)


def test_recurrent_deltanet_without_recurrence_is_a_softmax_deltanet():
    layer = RecurrentDeltaNet(8, 2).double()
    layer.R.data.zero_()
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    y, (S, o_last) = layer(x)
    q, k, v, b = layer.proj(x).unflatten(-1, (2, -1)).split([4, 4, 4, 1], dim=-1)
    o, S_ref = delta_rule(
        q.softmax(-1), k.softmax(-1), v, b.squeeze(-1).sigmoid(), output_final_state=True
    )
    torch.testing.assert_close(y, layer.out(o.flatten(-2)))
    torch.testing.assert_close(S, S_ref)
    torch.testing.assert_close(o_last, o[:, -1])


def test_recurrent_deltanet_reads_tanh_of_its_previous_output():
    layer = RecurrentDeltaNet(4, 1).double()
    x = torch.randn(1, 2, 4, dtype=torch.float64)
    _, (S1, o1) = layer(x[:, :1])
    _, (S2, _) = layer(x[:, 1:], (S1, o1))
    pre = layer.proj(x[0, 1]) + torch.tanh(o1[0, 0]) @ layer.R[0]
    q, k, v, b = pre.split([4, 4, 4, 1])
    k = k.softmax(-1)
    expected = S1[0, 0] + b.sigmoid() * torch.outer(k, v - S1[0, 0].T @ k)
    torch.testing.assert_close(S2[0, 0], expected)


def test_delta_rnn_first_step_by_hand():
    """From zero state: W_1 = β' k' v'ᵀ and h_1 = W_1ᵀ softmax(0) + z_1 = β' v' / D + z_1."""
    layer = DeltaRNN(6, 2).double()
    x = torch.randn(3, 1, 6, dtype=torch.float64)
    _, (_, W, h) = layer(x)
    q, k, v, rk, rv, b, rb = layer.proj(x).unflatten(-1, (2, -1)).split([3] * 5 + [1] * 2, -1)
    z, _ = delta_rule(layer.phi(q), layer.phi(k), v, b.squeeze(-1).sigmoid())
    torch.testing.assert_close(h, (rb.sigmoid() * rv / 3 + z)[:, 0])
    torch.testing.assert_close(
        W, (rb.sigmoid()[..., None] * rk.softmax(-1)[..., None] * rv[..., None, :])[:, 0]
    )


def test_delta_lstm_first_step_by_hand():
    """From zero state: pre-activations z^g + β'v'/D; c = i·u; h = o·c."""
    layer = DeltaLSTM(6, 2).double()
    x = torch.randn(3, 1, 6, dtype=torch.float64)
    y, (_, _, h, c) = layer(x)
    q, k, v, _, rv, b, rb = layer.proj(x).unflatten(-1, (6, -1)).split([3] * 5 + [1] * 2, -1)
    z, _ = delta_rule(layer.phi(q), layer.phi(k), v, b.squeeze(-1).sigmoid())
    i, u, o = torch.sigmoid(z + rb.sigmoid() * rv / 3)[:, 0].unflatten(1, (3, 2)).unbind(1)
    torch.testing.assert_close(c, i * u)
    torch.testing.assert_close(h, o * i * u)
    torch.testing.assert_close(y[:, 0], layer.out(h.flatten(-2)))


def test_deltaproduct_with_one_micro_step_is_deltanet():
    deltanet = DeltaNet(12, 3, feature_map="l2").double()
    product = DeltaProduct(12, 3, n_h=1, feature_map="l2").double()
    # DeltaNet splits heads first, then q, k, v inside each head.
    wq, wk, wv = (w.flatten(0, 1) for w in deltanet.qkv.weight.data.view(3, 3, 4, 12).unbind(1))
    product.q.weight.data, product.k.weight.data, product.v.weight.data = wq, wk, wv
    product.beta.load_state_dict(deltanet.beta.state_dict())
    product.out.load_state_dict(deltanet.out.state_dict())
    x = torch.randn(2, 13, 12, dtype=torch.float64)
    for a, b in zip(product(x), deltanet(x), strict=True):
        torch.testing.assert_close(a, b)


def test_gated_deltanet_without_decay_is_deltanet():
    gated = GatedDeltaNet(12, 3).double()
    gated.A_log.data.fill_(-math.inf)  # A = 0: g = 0, α = 1
    deltanet = DeltaNet(12, 3, feature_map="l2").double()
    deltanet.load_state_dict(gated.state_dict(), strict=False)
    x = torch.randn(2, 13, 12, dtype=torch.float64)
    for a, b in zip(gated(x), deltanet(x), strict=True):
        torch.testing.assert_close(a, b)


def test_gated_deltanet_decays_are_in_unit_interval():
    layer = GatedDeltaNet(8, 2)
    softplus = torch.nn.functional.softplus
    g = -layer.A_log.exp() * softplus(layer.alpha(torch.randn(50, 8)) + layer.dt_bias)
    assert (g < 0).all() and (g > -20).all()


def test_state_layouts():
    x = torch.randn(2, 5, 12)
    shapes = {
        "rec_deltanet": [(2, 3, 4, 4), (2, 3, 4)],
        "delta_rnn": [(2, 3, 4, 4), (2, 3, 4, 4), (2, 3, 4)],
        "delta_lstm": [(2, 9, 4, 4), (2, 3, 3, 4, 4), (2, 3, 4), (2, 3, 4)],
        "deltadelta": [(2, 3, 4, 13), (2, 3, 4, 4)],
        "srdelta": [(2, 3, 13 + 8 + 1, 4), (2, 3, 4, 4)],
        "deltaproduct": [(2, 3, 4, 4)],
        "gated_deltanet": [(2, 3, 4, 4)],
    }
    for name, expected in shapes.items():
        _, state = LAYERS[name](12, 3)(x)
        state = state if isinstance(state, tuple) else (state,)
        assert [tuple(s.shape) for s in state] == expected, name


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_sequential_layers_memory_grows_linearly_in_head_dim(name):
    """Saved bytes per extra step: O(D) vectors for the scan, O(D²) matrices for the reference."""
    def per_step(mode, D):
        layer = LAYERS[name](D, 1, mode=mode).double()
        cost = {}
        for T in (32, 128):
            x = torch.randn(1, T, D, dtype=torch.float64, requires_grad=True)
            cost[T] = saved_bytes(lambda layer=layer, x=x: layer(x))
        return (cost[128] - cost[32]) / 96

    scan_32, scan_64 = per_step("auto", 32), per_step("auto", 64)
    ref_32, ref_64 = per_step("recurrent", 32), per_step("recurrent", 64)
    assert ref_64 / ref_32 > 3.3  # quadratic in D: the reference keeps a matrix per step
    assert scan_64 / scan_32 < 2.6  # linear in D, plus the √T checkpoints' D²/√T per step
    assert scan_64 < ref_64 / 3


def test_bad_options_are_explained():
    with pytest.raises(UserError, match="unknown mode 'chunk'"):
        build_layer("rec_deltanet", 8, 2, mode="chunk")
    with pytest.raises(UserError, match="n_h"):
        build_layer("deltaproduct", 8, 2, n_h=0)
    with pytest.raises(UserError, match="bad options for layer 'delta_lstm'"):
        build_layer("delta_lstm", 8, 2, n_beta=4)
    with pytest.raises(UserError, match="dpfp"):
        build_layer("deltadelta", 8, 2, feature_map="dpfp2")
    with pytest.raises(UserError, match="not divisible"):
        build_layer("srdelta", 10, 4)
    with pytest.raises(UserError, match="checkpoint_every"):
        build_layer("delta_rnn", 8, 2, checkpoint_every=0)(torch.randn(1, 3, 8))


NEGATIVE_EIGENVALUE_LAYERS = ["deltanet", "rec_deltanet", "gated_deltanet", "deltaproduct", "srwm"]


@pytest.mark.parametrize("name", NEGATIVE_EIGENVALUE_LAYERS)
def test_beta_in_zero_two_fast_form_matches_reference(name):
    """β = 2σ(·): the fast form (C++/chunked/checkpointed) equals the reference loop, forward
    and gradients, with rates above 1 present (the bias pushes σ towards 1)."""
    options = {"beta_init_mean": 2.0, "n_beta": 4} if name == "srwm" else {}
    fast, reference = twin(name, 10, 2, head_dim=5, allow_negative_eigenvalues=True, **options)
    for layer in (fast, reference):
        beta = layer.beta if hasattr(layer, "beta") else None
        if beta is not None:
            beta.bias.data.fill_(2.0)
    x = torch.randn(2, 19, 10, dtype=torch.float64, requires_grad=True)
    results = []
    for layer in (fast, reference):
        y, final = layer(x)
        flat = [y, *(final if isinstance(final, tuple) else (final,))]
        results.append([*flat, *grads_of(flat, [x, *layer.parameters()])])
    for f, r in zip(*results, strict=True):
        torch.testing.assert_close(f, r, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet"])
def test_beta_in_zero_two_is_twice_the_sigmoid(name):
    torch.manual_seed(0)
    plain = build_layer(name, 8, 2)
    torch.manual_seed(0)
    wide = build_layer(name, 8, 2, allow_negative_eigenvalues=True)
    x = torch.randn(3, 7, 8)
    *_, beta_plain = plain.read_inputs(x)
    *_, beta_wide = wide.read_inputs(x)
    torch.testing.assert_close(beta_wide, 2 * beta_plain)
    assert beta_wide.max() > 1.0 and beta_wide.min() > 0.0 and beta_wide.max() < 2.0


def test_recurrent_deltanet_beta_in_zero_two_by_hand():
    """First step from S = 0, a_0 = tanh(0) = 0: S_1 = 2σ(b) φ(k) vᵀ."""
    layer = RecurrentDeltaNet(4, 1, allow_negative_eigenvalues=True).double()
    x = torch.randn(1, 1, 4, dtype=torch.float64)
    q, k, v, b = layer.proj(x)[0, 0].split([4, 4, 4, 1])
    (S, _) = layer(x)[1]
    expected = 2 * torch.sigmoid(b) * torch.softmax(k, -1)[:, None] * v[None, :]
    torch.testing.assert_close(S[0, 0], expected)


def test_negative_eigenvalue_flips_the_state():
    """Unit key k, β → 2: I − β k kᵀ is the reflection at k⊥, so writing v = 0 twice along k
    maps S to −S and back (eigenvalue −1); with β ∈ (0, 1) the component only shrinks."""
    key = torch.nn.functional.normalize(torch.randn(1, 1, 1, 3, dtype=torch.float64), dim=-1)
    k = key.expand(1, 2, 1, 3).contiguous()
    S0 = k[:, 0].transpose(-1, -2) @ torch.ones(1, 1, 1, 2, dtype=torch.float64)  # [1, 1, 3, 2]
    v = torch.zeros(1, 2, 1, 2, dtype=torch.float64)
    beta = torch.full((1, 2, 1), 2.0, dtype=torch.float64)
    for mode in ("recurrent", "chunk", "fused_cpu"):
        o, S = delta_rule(k, k, v, beta, initial_state=S0, output_final_state=True, mode=mode)
        torch.testing.assert_close(o[:, 0], -(k[:, 0] @ S0[:, 0]).unsqueeze(1)[:, 0])
        torch.testing.assert_close(S, S0)
