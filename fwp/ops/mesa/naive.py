"""Reference forms of the Mesa layer: a loop over time with a conjugate-gradient solve per step,
and the exact solve of the same sums with ``torch.linalg.solve``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable

from fwp.ops._validation import state_dtype

MatVec = Callable[..., torch.Tensor]


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
                       steps: int) -> torch.Tensor:
    """``steps`` iterations of conjugate gradients for A x = b from x_0 = 0, batched over
    every dimension of b but the last (Hestenes & Stiefel 1952; von Oswald et al. 2025, §3).

    A must be symmetric positive definite. The two divisions are guarded against 0/0 once the
    residual vanishes (then the step is 0 and x stays put); no other damping, so in float64 the
    iterates reach the exact solution after at most dim(b) steps.
    """
    tiny = torch.finfo(b.dtype).eps ** 2
    x = torch.zeros_like(b)
    r = b
    p = r
    rr = (r * r).sum(-1, keepdim=True)
    for _ in range(steps):
        Ap = matvec(p)
        alpha = rr / (p * Ap).sum(-1, keepdim=True).clamp_min(tiny)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = (r * r).sum(-1, keepdim=True)
        p = r + rr_new / rr.clamp_min(tiny) * p
        rr = rr_new
    return x


class CGSolve(torch.autograd.Function):
    """x = A⁻¹ b by conjugate gradients, with the implicit gradient (MesaNet §3.3):

        b̄ = A⁻¹ x̄ (a second CG solve, A symmetric),   Ā = −b̄ xᵀ,

    where A p = ``matvec(p, *params)`` is linear in p; Ā reaches ``params`` by back-propagating
    −b̄ · matvec(x, *params) with x and b̄ held fixed. Differentiating through the iterations
    instead would divide by residuals that vanish once CG has converged.
    """

    @staticmethod
    def forward(ctx, matvec, steps, b, *params):  # noqa: ANN001 — autograd API
        with torch.no_grad():
            x = conjugate_gradient(lambda p: matvec(p, *params), b, steps)
        ctx.matvec, ctx.steps = matvec, steps
        ctx.save_for_backward(x, *params)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_x):  # noqa: ANN001
        x, *params = ctx.saved_tensors
        grad_b = conjugate_gradient(lambda p: ctx.matvec(p, *params), grad_x, ctx.steps)
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_(p.requires_grad) for p in params]
            wanted = [p for p in leaves if p.requires_grad]
            grads = iter(torch.autograd.grad(-(grad_b * ctx.matvec(x, *leaves)).sum(), wanted)
                         if wanted else ())
        return (None, None, grad_b, *(next(grads) if p.requires_grad else None for p in leaves))


def cg_solve(matvec: MatVec, b: torch.Tensor, steps: int, *params: torch.Tensor) -> torch.Tensor:
    """A⁻¹ b for the SPD operator p ↦ ``matvec(p, *params)``, ``steps`` CG iterations, with the
    implicit gradient of :class:`CGSolve`."""
    return CGSolve.apply(matvec, steps, b, *params)


def _step_matvec(p: torch.Tensor, H: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    return (p.unsqueeze(-2) @ H).squeeze(-2) + lam * p


def mesa_update(state: tuple[torch.Tensor, torch.Tensor], k: torch.Tensor, v: torch.Tensor,
                beta: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """H_t = γ_t H_{t−1} + β_t k_t k_tᵀ and G_t = γ_t G_{t−1} + β_t k_t v_tᵀ, γ_t = exp(g_t)."""
    H, G = state
    decay = g.exp()[..., None, None]
    bk = (beta.unsqueeze(-1) * k).unsqueeze(-1)
    return decay * H + bk * k.unsqueeze(-2), decay * G + bk * v.unsqueeze(-2)


def _start(q: torch.Tensor, v: torch.Tensor, initial_state) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    B, _, Hd, K = q.shape
    dtype = state_dtype(q.dtype)
    if initial_state is None:
        return (q.new_zeros(B, Hd, K, K, dtype=dtype), q.new_zeros(B, Hd, K, v.shape[-1],
                                                                    dtype=dtype))
    return tuple(s.to(dtype) for s in initial_state)


def mesa_recurrent(q, k, v, beta, g, lamb, initial_state=None, output_final_state=False,  # noqa: ANN001
                   cg_steps=30):
    """Step by step: update (H, G), solve (H_t + diag λ) x_t = q_t by CG, read o_t = G_tᵀ x_t."""
    dtype = state_dtype(q.dtype)
    state = _start(q, v, initial_state)
    lam = lamb.to(dtype)
    outputs = []
    for q_t, k_t, v_t, b_t, g_t in zip(*(t.to(dtype).unbind(1) for t in (q, k, v, beta, g))):
        state = mesa_update(state, k_t, v_t, b_t, g_t)
        H, G = state
        x = cg_solve(_step_matvec, q_t, cg_steps, H, lam)
        outputs.append((x.unsqueeze(-2) @ G).squeeze(-2))
    o = torch.stack(outputs, dim=1).to(q.dtype)
    return o, (state if output_final_state else None)


def mesa_exact(q, k, v, beta, g, lamb, initial_state=None, output_final_state=False,  # noqa: ANN001
               cg_steps=30):
    """The same sums solved exactly, x_t = (H_t + diag λ)⁻¹ q_t by ``torch.linalg.solve``
    (``cg_steps`` is ignored): the optimum the CG forms approach."""
    dtype = state_dtype(q.dtype)
    state = _start(q, v, initial_state)
    ridge = torch.diag_embed(lamb.to(dtype))
    outputs = []
    for q_t, k_t, v_t, b_t, g_t in zip(*(t.to(dtype).unbind(1) for t in (q, k, v, beta, g))):
        state = mesa_update(state, k_t, v_t, b_t, g_t)
        H, G = state
        x = torch.linalg.solve(H.mT + ridge, q_t)  # H is symmetric; Hᵀ as the CG forms read it
        outputs.append((x.unsqueeze(-2) @ G).squeeze(-2))
    o = torch.stack(outputs, dim=1).to(q.dtype)
    return o, (state if output_final_state else None)
