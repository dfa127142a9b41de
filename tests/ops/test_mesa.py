import pytest
import torch
import torch.nn.functional as F

from fwp.errors import UserError
from fwp.ops import mesa
from fwp.ops.mesa import conjugate_gradient
from tests.ops.helpers import assert_same_forward_and_grads, leaf

SHAPES = [(2, 1, 3, 5, 7), (2, 37, 1, 5, 3), (1, 50, 2, 6, 2)]  # B, T, H, K, V


def unit(x):
    return F.normalize(x, dim=-1)


def inputs_for(B, T, H, K, V, with_state=False):
    inputs = [
        leaf(B, T, H, K, fn=unit), leaf(B, T, H, K, fn=unit), leaf(B, T, H, V),
        leaf(B, T, H, fn=torch.sigmoid), leaf(B, T, H, fn=lambda x: F.logsigmoid(x + 2.0)),
        leaf(H, K, fn=lambda x: F.softplus(x) + 0.25),
    ]
    if with_state:
        k0 = torch.randn(B, H, 4, K, dtype=torch.float64)
        inputs += [(k0.transpose(-1, -2) @ k0).requires_grad_(), leaf(B, H, K, V)]
    return inputs


def run(mode, cg_steps=30, chunk_size=64):
    def fn(q, k, v, beta, g, lamb, h0=None, g0=None):
        state = None if h0 is None else (h0, g0)
        o, (H, G) = mesa(q, k, v, beta, g, lamb, initial_state=state, output_final_state=True,
                         mode=mode, cg_steps=cg_steps, chunk_size=chunk_size)
        return o, H, G
    return fn


@pytest.mark.parametrize("chunk_size", [16, 64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_matches_recurrent(shape, chunk_size, with_state):
    """Same CG iterations organised by chunk: equal forward and gradients (few steps, so the
    iterates have not converged and every step's arithmetic matters)."""
    assert_same_forward_and_grads(run("recurrent", cg_steps=3),
                                  run("chunk", cg_steps=3, chunk_size=chunk_size),
                                  inputs_for(*shape, with_state), atol=1e-8)


@pytest.mark.parametrize("mode", ["recurrent", "chunk"])
@pytest.mark.parametrize("shape", SHAPES)
def test_conjugate_gradient_reaches_the_exact_solve(mode, shape):
    """With K + 2 steps CG reaches torch.linalg.solve's solution of the same sums, forward and
    gradients (float64)."""
    K = shape[3]
    assert_same_forward_and_grads(run("exact"), run(mode, cg_steps=K + 2, chunk_size=16),
                                  inputs_for(*shape, with_state=True), atol=1e-8)


def test_output_is_the_ridge_regression_optimum():
    """o_t = W* q_t with W* = argmin Σ_τ β_τ Γ ‖W k_τ − v_τ‖² + Σ_i λ_i ‖W e_i‖², solved here by
    the normal equations on the explicit past (no recurrence)."""
    q, k, v, beta, g, lamb = (t.detach() for t in inputs_for(1, 9, 1, 4, 3))
    o, _ = mesa(q, k, v, beta, g, lamb, mode="chunk", cg_steps=8, chunk_size=4)
    for t in range(9):
        w = beta[0, : t + 1, 0] * torch.exp(g[0, : t + 1, 0].flip(0).cumsum(0).flip(0)
                                            - g[0, : t + 1, 0])
        K, V = k[0, : t + 1, 0], v[0, : t + 1, 0]
        A = K.T @ (w[:, None] * K) + torch.diag(lamb[0])
        W_star = torch.linalg.solve(A, K.T @ (w[:, None] * V)).T  # [V, K]
        torch.testing.assert_close(o[0, t, 0], W_star @ q[0, t, 0])


def test_conjugate_gradient_on_a_fixed_system():
    torch.manual_seed(0)
    M = torch.randn(3, 6, 6, dtype=torch.float64)
    A = M @ M.transpose(-1, -2) + torch.eye(6, dtype=torch.float64)
    b = torch.randn(3, 6, dtype=torch.float64)
    x = conjugate_gradient(lambda p: (A @ p.unsqueeze(-1)).squeeze(-1), b, steps=8)
    torch.testing.assert_close(x, torch.linalg.solve(A, b))
    zero = conjugate_gradient(lambda p: (A @ p.unsqueeze(-1)).squeeze(-1), 0 * b, steps=4)
    assert torch.equal(zero, torch.zeros_like(b))


def test_long_strong_decay_float32_stays_finite():
    q, k, v, beta, g, lamb = (t.detach().float() for t in inputs_for(1, 200, 2, 8, 4))
    g = torch.full_like(g, -5.0).requires_grad_()
    o, _ = mesa(q, k, v, beta, g, lamb, mode="chunk")
    o.sum().backward()
    assert torch.isfinite(o).all() and torch.isfinite(g.grad).all()


def test_bad_inputs_are_explained():
    q, k, v, beta, g, lamb = (t.detach() for t in inputs_for(1, 3, 2, 4, 5))
    with pytest.raises(UserError, match="lamb must be"):
        mesa(q, k, v, beta, g, lamb[:1])
    with pytest.raises(UserError, match="g must be"):
        mesa(q, k, v, beta, g[..., :1], lamb)
    with pytest.raises(UserError, match="cg_steps"):
        mesa(q, k, v, beta, g, lamb, cg_steps=0)
    with pytest.raises(UserError, match="initial_state must be the pair"):
        mesa(q, k, v, beta, g, lamb, initial_state=torch.zeros(1))
    with pytest.raises(UserError, match="initial_state G must be"):
        mesa(q, k, v, beta, g, lamb, initial_state=(torch.zeros(1, 2, 4, 4, dtype=q.dtype),
                                                    torch.zeros(1, 2, 4, 4, dtype=q.dtype)))
