"""Every output of a fast weight programmer as one contribution per past write (the talk's
"Deriving the FWP-attention duality"; Katharopoulos et al. 2020, Schlag, Irie, Schmidhuber 2021).

A fast weight matrix written by outer products, S_t = S_0 + Σ_{τ≤t} k_τ ⊗ u_τ, is a key-value
memory of its writes, so a read is an initial-state term plus unnormalised attention:

    o_t = S_tᵀ q_t = S_0ᵀ q_t + Σ_{τ≤t} (q_t · k_τ) u_τ

What is written differs by rule: u_τ = v_τ (sum rule), u_τ = β_τ (v_τ − S_{τ−1}ᵀ k_τ) (delta rule),
and for the SRWM the written vector is σ(b_τ)(v_τ − v̄_τ) with key φ(k_τ). The values u_τ of the
delta rule and the SRWM depend on the state, so they are found by running the recurrence once;
the split itself is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fwp.errors import UserError
from fwp.ops._validation import check_qkv, check_srwm, start_state, state_dtype
from fwp.ops.srwm.naive import srwm_step


@dataclass
class Decomposition:
    """o_t = initial_t + Σ_τ scores[t, τ] · values[τ], per batch element and head.

    Attributes:
        initial: ``[B, T, H, V]`` what the initial fast weights give (S_0ᵀ q_t or W_0 x_t).
        scores: ``[B, T, H, T_write]`` unnormalised attention q_t · k_τ of read t on write τ;
            zero where write τ came after read t.
        values: ``[B, T_write, H, V]`` the vector u_τ that write τ added (its fast weight change
            is k_τ ⊗ u_τ).
    """

    initial: torch.Tensor
    scores: torch.Tensor
    values: torch.Tensor

    @property
    def contributions(self) -> torch.Tensor:
        """``[B, T, H, T_write, V]``: contribution (q_t · k_τ) u_τ of write τ to output t."""
        return self.scores.unsqueeze(-1) * self.values.transpose(1, 2).unsqueeze(1)

    def total(self) -> torch.Tensor:
        """``[B, T, H, V]``: the initial term plus the sum of every write's contribution."""
        return self.initial + self.contributions.sum(dim=3)


def _attention(queries: torch.Tensor, keys: torch.Tensor, strict: bool) -> torch.Tensor:
    """Causal scores ``[B, T, H, T]``: q_t · k_τ for τ ≤ t (τ < t when ``strict``), else 0."""
    scores = torch.einsum("bthk,bshk->bths", queries, keys)
    T = queries.shape[1]
    visible = torch.ones(T, T, dtype=torch.bool, device=scores.device).tril(-1 if strict else 0)
    return scores * visible[None, :, None, :]


def sum_rule_contributions(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
) -> Decomposition:
    """Split :func:`fwp.ops.linear_attention` (S_t = S_{t−1} + k_t v_tᵀ, o_t = S_tᵀ q_t):

        o_t = S_0ᵀ q_t + Σ_{τ≤t} (q_t · k_τ) v_τ

    Args:
        q, k: ``[B, T, H, K]``, already feature-mapped; v: ``[B, T, H, V]``.
        initial_state: ``[B, H, K, V]`` S_0 (zeros if ``None``).

    Returns:
        A :class:`Decomposition` in the state dtype (at least float32) with values = v.
    """
    B, T, H, K, V = check_qkv(q, k, v, None, initial_state)
    dtype = state_dtype(q.dtype)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    S0 = start_state(q, K, V, initial_state)
    return Decomposition(
        initial=torch.einsum("bthk,bhkv->bthv", q, S0),
        scores=_attention(q, k, strict=False),
        values=v,
    )


def delta_rule_contributions(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
) -> Decomposition:
    """Split :func:`fwp.ops.delta_rule` (S_t = S_{t−1} + k_t u_tᵀ, o_t = S_tᵀ q_t) with

        u_τ = β_τ (v_τ − S_{τ−1}ᵀ k_τ),    o_t = S_0ᵀ q_t + Σ_{τ≤t} (q_t · k_τ) u_τ

    The delta rule's "forgetting" lives in the values: a write that replaces an old association
    carries −β_τ S_{τ−1}ᵀ k_τ, so earlier writes are not rescaled.

    Args:
        q, k: ``[B, T, H, K]``, already feature-mapped; v: ``[B, T, H, V]``;
        beta: ``[B, T, H]`` write strengths.
        initial_state: ``[B, H, K, V]`` S_0 (zeros if ``None``).

    Returns:
        A :class:`Decomposition` in the state dtype (at least float32) with values = u.
    """
    B, T, H, K, V = check_qkv(q, k, v, beta, initial_state)
    dtype = state_dtype(q.dtype)
    q, k, v, beta = (t.to(dtype) for t in (q, k, v, beta))
    S0 = start_state(q, K, V, initial_state)
    state, written = S0, []
    for k_t, v_t, beta_t in zip(k.unbind(1), v.unbind(1), beta.unbind(1), strict=True):
        u = beta_t.unsqueeze(-1) * (v_t - torch.einsum("bhk,bhkv->bhv", k_t, state))
        state = state + k_t.unsqueeze(-1) * u.unsqueeze(-2)
        written.append(u)
    return Decomposition(
        initial=torch.einsum("bthk,bhkv->bthv", q, S0),
        scores=_attention(q, k, strict=False),
        values=torch.stack(written, dim=1),
    )


def srwm_contributions(
    x: torch.Tensor,
    W0: torch.Tensor,
    *,
    n_beta: int = 1,
    input_softmax: bool = False,
    d_out: int | None = None,
    rate_scale: float = 1.0,
) -> Decomposition:
    """Split the output rows y of :func:`fwp.ops.srwm`. With a_t = x_t (or φ(x_t) when
    ``input_softmax``) and the SRWM's writes W_τ = W_{τ−1} + u_τ ⊗ φ(k_τ) (Eq. 4),
    u_τ = s σ(b_τ)(v_τ − v̄_τ) (s = ``rate_scale``), the read uses the matrix before step t:

        y_t = W_{t−1} a_t |_y = W_0 a_t |_y + Σ_{τ<t} (φ(k_τ) · a_t) u_τ |_y

    so write τ reaches outputs t > τ only (the scores are strictly causal).

    Args:
        x: ``[B, T, H, D]``; W0: ``[H, R, D]`` or ``[B, H, R, D]``, rows y, k, q, β.
        n_beta, input_softmax, d_out, rate_scale: as in :func:`fwp.ops.srwm`.

    Returns:
        A :class:`Decomposition` with V = D_out (the y rows) in the state dtype (at least
        float32); values are the y rows of u_τ.
    """
    d_out = check_srwm(x, W0, n_beta, d_out)
    B, T, H, D = x.shape
    dtype = state_dtype(x.dtype)
    a = x.to(dtype)
    if input_softmax:
        a = torch.softmax(a, dim=-1)
    W = W0.to(dtype).expand(B, *W0.shape[-3:])
    initial = torch.einsum("bhrd,bthd->bthr", W[..., :d_out, :], a)
    keys, written = [], []
    for a_t in a.unbind(1):
        _, pk, u, W = srwm_step(W, a_t, n_beta, rate_scale)
        keys.append(pk)
        written.append(u[..., :d_out])
    return Decomposition(
        initial=initial,
        scores=_attention(a, torch.stack(keys, dim=1), strict=True),
        values=torch.stack(written, dim=1),
    )


def write_attributions(
    decomposition: Decomposition, t: int, direction: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """How much each write moves one read-out of output t, e.g. a logit.

    With d the direction (a one-hot output channel, or any ``[V]`` / ``[B, H, V]`` vector):

        d · o_t = d · initial_t + Σ_τ (q_t · k_τ)(d · u_τ)

    Args:
        decomposition: from one of the ``*_contributions`` functions.
        t: the output step (negative counts from the end).
        direction: an output channel index, or a vector ``[V]`` or ``[B, H, V]``.

    Returns:
        ``(initial [B, H], per_write [B, H, T_write])``; their total is d · o_t.
    """
    B, T, H, V = decomposition.initial.shape
    if not -T <= t < T:
        raise UserError(f"t = {t} is outside the sequence of length {T}: pick -{T} ≤ t < {T}")
    if isinstance(direction, int):
        if not -V <= direction < V:
            raise UserError(f"output channel {direction} is outside 0..{V - 1}")
        d = torch.zeros(V, dtype=decomposition.initial.dtype, device=decomposition.initial.device)
        d[direction] = 1.0
    else:
        if direction.shape not in ((V,), (B, H, V)):
            raise UserError(
                f"direction must be an int channel, [V] = [{V}] or [B, H, V] = [{B}, {H}, {V}], "
                f"got shape {tuple(direction.shape)}"
            )
        d = direction.to(decomposition.initial)
    d = d.expand(B, H, V)
    initial = (decomposition.initial[:, t] * d).sum(-1)
    per_value = torch.einsum("bshv,bhv->bhs", decomposition.values, d)
    return initial, decomposition.scores[:, t] * per_value
