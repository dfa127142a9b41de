import pytest
import torch
import torch.nn.functional as F

from fwp.errors import UserError
from fwp.ops import delta_mlp, delta_rule
from fwp.ops.delta_mlp import ACTIVATIONS
from fwp.ops.delta_mlp.naive import delta_mlp_step
from tests.ops.helpers import assert_same_forward_and_grads, leaf

SHAPES = [(2, 1, 3, 5, 4, 6), (1, 23, 1, 4, 3, 7), (2, 17, 2, 3, 5, 2)]  # B, T, H, K, V, hidden


def inputs_for(B, T, H, K, V, hidden, batched_weights=False):
    lead = (B, H) if batched_weights else (H,)
    return [
        leaf(B, T, H, K), leaf(B, T, H, K, fn=lambda x: F.normalize(x, dim=-1)),
        leaf(B, T, H, V), leaf(B, T, H, fn=lambda x: torch.sigmoid(x) / 2),
        leaf(*lead, K, hidden, fn=lambda w: w / K**0.5),
        leaf(*lead, hidden, V, fn=lambda w: w / hidden**0.5),
    ]


def run(mode, activation="gelu", checkpoint_every=None, normalize=False):
    def fn(q, k, v, beta, *weights):
        o, final = delta_mlp(q, k, v, beta, list(weights), activation=activation, mode=mode,
                             checkpoint_every=checkpoint_every, normalize=normalize)
        return (o, *final)
    return fn


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_scan_matches_reference(shape, activation):
    assert_same_forward_and_grads(run("recurrent", activation), run("scan", activation, 4),
                                  inputs_for(*shape))


@pytest.mark.parametrize("normalize", [False, True])
def test_batched_initial_weights_match_reference(normalize):
    assert_same_forward_and_grads(run("recurrent", normalize=normalize),
                                  run("scan", normalize=normalize),
                                  inputs_for(2, 9, 2, 3, 4, 5, batched_weights=True))


@pytest.mark.parametrize("mode", ["recurrent", "scan"])
def test_one_identity_layer_is_the_delta_rule(mode):
    """f(x) = Sᵀx: the gradient step on ½‖Sᵀk − v‖² is DeltaNet's write, exactly."""
    q, k, v, beta = (t.detach() for t in inputs_for(2, 11, 3, 4, 5, 1)[:4])
    S0 = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    expected, S_T = delta_rule(q, k, v, beta, initial_state=S0, output_final_state=True,
                               mode="recurrent")
    o, (S,) = delta_mlp(q, k, v, beta, [S0], activation="identity", mode=mode)
    torch.testing.assert_close(o, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(S, S_T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_step_is_one_gradient_step_on_the_local_loss(activation, depth, normalize):
    """The hand-written backprop equals autograd's gradient of ½‖f(k) − v‖², for every layer
    (rate β, or β / max(1, ‖layer input‖²) when normalised)."""
    torch.manual_seed(depth)
    sizes = [4, 6, 5, 3][: depth] + [3]
    weights = [torch.randn(2, 2, i, o, dtype=torch.float64) / i**0.5
               for i, o in zip(sizes[:-1], sizes[1:])]
    q, k = torch.randn(2, 2, 4, dtype=torch.float64), torch.randn(2, 2, 4, dtype=torch.float64)
    v, beta = torch.randn(2, 2, 3, dtype=torch.float64), torch.rand(2, 2, dtype=torch.float64)
    act = ACTIVATIONS[activation][0]
    leaves = [w.clone().requires_grad_() for w in weights]
    h, layer_inputs = 2 * k, []  # |k| > 1, so that normalising changes the rate
    for i, S in enumerate(leaves):
        layer_inputs.append(h.detach())
        h = torch.einsum("bhi,bhio->bho", h, S)
        h = act(h) if i < depth - 1 else h
    loss = 0.5 * (h - v).square().sum()
    grads = torch.autograd.grad(loss, leaves)
    _, new = delta_mlp_step(q, 2 * k, v, beta, tuple(weights), activation, normalize)
    for w, g, n, x in zip(weights, grads, new, layer_inputs):
        rate = beta / x.square().sum(-1).clamp_min(1.0) if normalize else beta
        torch.testing.assert_close(n, w - rate[..., None, None] * g)


def test_writes_reduce_the_local_loss():
    """A small rate: after the step the fast net fits (k, v) better than before."""
    torch.manual_seed(0)
    weights = (torch.randn(1, 1, 4, 8) / 2, torch.randn(1, 1, 8, 3) / 3)
    k, v = F.normalize(torch.randn(1, 1, 4), dim=-1), torch.randn(1, 1, 3)
    fit_before, _ = delta_mlp_step(k, k, v, torch.zeros(1, 1), weights, "tanh")
    fit_after, _ = delta_mlp_step(k, k, v, torch.full((1, 1), 0.5), weights, "tanh")
    assert (fit_after - v).norm() < (fit_before - v).norm()


def test_bad_inputs_are_explained():
    q, k, v, beta, W1, W2 = (t.detach() for t in inputs_for(1, 3, 2, 4, 5, 6))
    with pytest.raises(UserError, match="unknown activation"):
        delta_mlp(q, k, v, beta, [W1, W2], activation="swish")
    with pytest.raises(UserError, match="weights\\[1\\] must be"):
        delta_mlp(q, k, v, beta, [W1, W1])
    with pytest.raises(UserError, match="must output V = 5"):
        delta_mlp(q, k, v, beta, [W1])
    with pytest.raises(UserError, match="non-empty list"):
        delta_mlp(q, k, v, beta, W1)
    with pytest.raises(UserError, match="unknown mode"):
        delta_mlp(q, k, v, beta, [W1, W2], mode="chunk")
