"""Exact real-time recurrent learning (RTRL) for one recurrent layer (Irie, Gopalakrishnan &
Schmidhuber, ICLR 2024, "Exploring the Promise and Limits of Real-Time Recurrent Learning").

RTRL carries, forward in time, the sensitivity ds_t/dθ of the layer's state s_t to each
recurrent parameter θ, so the gradient of a loss at step t is available at step t:

    dL_t/dθ = ∂L_t/∂s_t · ds_t/dθ,    ds_t/dθ = ∂s_t/∂s_{t−1} · ds_{t−1}/dθ + ∂s_t/∂θ,

with no stored past and no truncation. For a fully recurrent net ds/dθ is cubic in the width;
two one-layer models keep it the size of the parameters or one factor more:

- :class:`ELSTM`, element-wise recurrence (the paper's eLSTM, as its public code
  ``IDSIA/rtrl-elstm``): each unit's state reads only its own past, so ∂s_t/∂s_{t−1} is
  diagonal and unit i's sensitivity to row i of a weight matrix is one vector (N × D_in in all):

      z_t = tanh(W_z x_t + w_z ⊙ c_{t−1} + b_z),  f_t = σ(W_f x_t + w_f ⊙ c_{t−1} + b_f),
      c_t = f_t ⊙ c_{t−1} + (1 − f_t) ⊙ z_t,      h_t = c_t ⊙ σ(W_o [x_t; c_t] + b_o).

- :class:`SumFWP`, a one-layer fast weight programmer with the purely additive update rule
  (the linear Transformer, Katharopoulos et al. 2020; Schlag et al. 2021) and an element-wise
  feature map φ: per head, S_t = S_{t−1} + φ(k_t) ⊗ v_t, z_t = z_{t−1} + φ(k_t),
  o_t = S_tᵀ φ(q_t) / (z_tᵀ φ(q_t) + ε), with k, v, q linear in x_t. ∂S_t/∂S_{t−1} = I, and
  entry (a, c) of S depends only on row a of W_k and row c of W_v, so the sensitivities are
  P = Σ φ(k_τ) ⊗ x_τ (D × D_in), R = Σ φ'(k_τ) ⊗ x_τ and Q = Σ φ'(k_τ) ⊗ v_τ ⊗ x_τ
  (D × D × D_in) per head. The delta rule's write depends on S_{t−1} through S_{t−1}ᵀ k_t,
  which mixes the rows of S: its sensitivity to W_k is D² × D × D_in per head, and a second
  layer makes every sensitivity depend on the first layer's — the paper's limits (one layer,
  a limited update rule). Derivation ours; the paper states the limits.

Parameters below the layer (an encoder) would need the sensitivity to every one of them: as in
the paper's R2AC, they learn by backpropagation within the current segment only. Parameters
above it (the output gate, the query and output maps) need no sensitivity.

Each cell runs a segment in :meth:`forward` with its recurrent parameters detached (their
gradient comes from :meth:`rtrl_backward`, after ``loss.backward()`` has filled the top
gradients), or attached (``bptt=True``: ordinary autograd, for truncated BPTT and the tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

Tensors = tuple[torch.Tensor, ...]


@dataclass
class Segment:
    """What a segment's forward keeps for :meth:`rtrl_backward`: per-step vectors only
    (inputs, previous states or keys and values), and the top outputs whose ``.grad`` the
    backward fills."""

    saved: Tensors
    top: torch.Tensor
    start: torch.Tensor


def _reset(start: torch.Tensor, tensors: Tensors) -> Tensors:
    """Zero the rows of the environments where ``start [B]`` is true."""
    keep = (~start).to(tensors[0].dtype)
    return tuple(t * keep.view(-1, *([1] * (t.dim() - 1))) for t in tensors)


class ELSTM(nn.Module):
    """One eLSTM layer of ``n`` units (module docstring) with exact RTRL.

    State: ``c [B, N]``. Sensitivities: ``(dW_z, dW_f [B, N, D_in], dw_z, dw_f, db_z, db_f
    [B, N])``, the derivatives of c_t by each recurrent parameter's entries of unit i.
    Init as the public code: N(0, 0.1²) for every recurrent parameter.
    """

    def __init__(self, d_in: int, n: int) -> None:
        super().__init__()
        self.d_in, self.n = d_in, n
        self.W = nn.Parameter(torch.randn(2 * n, d_in) * 0.1)  # [W_z; W_f]
        self.w = nn.Parameter(torch.randn(2, n) * 0.1)  # w_z, w_f
        self.b = nn.Parameter(torch.randn(2, n) * 0.1)  # b_z, b_f
        self.out_gate = nn.Linear(d_in + n, n)

    @property
    def recurrent(self) -> list[nn.Parameter]:
        return [self.W, self.w, self.b]

    def initial(self, batch: int, dtype: torch.dtype = torch.float32) -> tuple[Tensors, Tensors]:
        """(state, sensitivities) of a fresh sequence."""
        zeros = lambda *s: torch.zeros(batch, *s, dtype=dtype)  # noqa: E731
        n, d = self.n, self.d_in
        return (zeros(n),), (zeros(n, d), zeros(n, d), *(zeros(n) for _ in range(4)))

    def forward(self, x: torch.Tensor, state: Tensors, start: torch.Tensor,
                bptt: bool = False) -> tuple[torch.Tensor, Tensors, Segment]:
        """x ``[B, T, D_in]`` from state ``(c,)``, resetting env b before step t where
        ``start[b, t]`` → (h ``[B, T, N]``, state, segment)."""
        W, w, b = (p if bptt else p.detach() for p in self.recurrent)
        pre = F.linear(x, W).unflatten(-1, (2, self.n))  # [B, T, 2, N]
        (c,), cells, prevs = state, [], []
        for pre_t, start_t in zip(pre.unbind(1), start.unbind(1)):
            (c,) = _reset(start_t, (c,))
            prevs.append(c.detach())
            gates = pre_t + w * c.unsqueeze(1) + b
            z, f = torch.tanh(gates[:, 0]), torch.sigmoid(gates[:, 1])
            c = f * c + (1 - f) * z
            cells.append(c)
        top = torch.stack(cells, dim=1)
        if not bptt:
            _keep_grad(top)
        h = top * torch.sigmoid(self.out_gate(torch.cat([x, top], dim=-1)))
        return h, (c,), Segment((x.detach(), torch.stack(prevs, dim=1)), top, start)

    @torch.no_grad()
    def rtrl_backward(self, segment: Segment, sens: Tensors) -> Tensors:
        """Replay the segment's sensitivity recurrence from ``sens``, add Σ_t ∂L/∂c_t · dc_t/dθ
        to the recurrent parameters' ``.grad``; returns the sensitivities at its end."""
        x, prev = segment.saved
        top = segment.top.grad if segment.top.grad is not None else torch.zeros_like(prev)
        dW_z, dW_f, dw_z, dw_f, db_z, db_f = sens
        gW = torch.zeros_like(self.W).unflatten(0, (2, self.n))
        gw, gb = torch.zeros_like(self.w), torch.zeros_like(self.b)
        pre = F.linear(x, self.W).unflatten(-1, (2, self.n))
        steps = zip(x.unbind(1), prev.unbind(1), pre.unbind(1), top.unbind(1),
                    segment.start.unbind(1))
        for x_t, c, pre_t, g, start_t in steps:
            dW_z, dW_f, dw_z, dw_f, db_z, db_f = _reset(start_t, (dW_z, dW_f, dw_z, dw_f,
                                                                  db_z, db_f))
            gates = pre_t + self.w * c.unsqueeze(1) + self.b
            z, f = torch.tanh(gates[:, 0]), torch.sigmoid(gates[:, 1])
            a_z, a_f = (1 - f) * (1 - z * z), (c - z) * f * (1 - f)
            jac = f + a_z * self.w[0] + a_f * self.w[1]  # ∂c_t/∂c_{t−1}, diagonal
            dW_z = jac.unsqueeze(-1) * dW_z + a_z.unsqueeze(-1) * x_t.unsqueeze(1)
            dW_f = jac.unsqueeze(-1) * dW_f + a_f.unsqueeze(-1) * x_t.unsqueeze(1)
            dw_z, dw_f = jac * dw_z + a_z * c, jac * dw_f + a_f * c
            db_z, db_f = jac * db_z + a_z, jac * db_f + a_f
            gW[0] += torch.einsum("bn,bnd->nd", g, dW_z)
            gW[1] += torch.einsum("bn,bnd->nd", g, dW_f)
            gw[0] += (g * dw_z).sum(0)
            gw[1] += (g * dw_f).sum(0)
            gb[0] += (g * db_z).sum(0)
            gb[1] += (g * db_f).sum(0)
        _add_grad(self.W, gW.flatten(0, 1))
        _add_grad(self.w, gw)
        _add_grad(self.b, gb)
        return dW_z, dW_f, dw_z, dw_f, db_z, db_f


def _keep_grad(top: torch.Tensor) -> None:
    """Have ``loss.backward()`` fill ``top.grad`` with ∂L/∂top along the paths that leave the
    layer (the top gradients of RTRL); a top with no graph yet (no encoder below, recurrent
    weights detached) becomes a leaf that asks for one."""
    if top.requires_grad:
        top.retain_grad()
    else:
        top.requires_grad_()


def _add_grad(p: nn.Parameter, g: torch.Tensor) -> None:
    p.grad = g.clone() if p.grad is None else p.grad + g


def _phi(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """φ = ELU + 1 (element-wise, positive) and its derivative."""
    return F.elu(k) + 1, torch.where(k > 0, torch.ones_like(k), torch.exp(k.clamp(max=0)))


class SumFWP(nn.Module):
    """One fast weight layer with the sum rule and normalised read (module docstring), exact
    RTRL for its write projections W_k, W_v. ``n = heads · head_dim`` outputs.

    State: ``(S [B, H, D, D], z [B, H, D])``; sensitivities ``(P, R [B, H, D, D_in],
    Q [B, H, D, D, D_in])``. The read (W_q) and the output map need no sensitivity.
    """

    def __init__(self, d_in: int, heads: int, head_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.d_in, self.heads, self.head_dim, self.eps = d_in, heads, head_dim, eps
        self.n = heads * head_dim
        scale = 1 / math.sqrt(d_in)
        self.W_kv = nn.Parameter(torch.randn(2 * self.n, d_in) * scale)  # [W_k; W_v]
        self.W_q = nn.Linear(d_in, self.n, bias=False)
        self.out = nn.Linear(self.n, self.n)

    @property
    def recurrent(self) -> list[nn.Parameter]:
        return [self.W_kv]

    def initial(self, batch: int, dtype: torch.dtype = torch.float32) -> tuple[Tensors, Tensors]:
        H, D, d = self.heads, self.head_dim, self.d_in
        zeros = lambda *s: torch.zeros(batch, H, *s, dtype=dtype)  # noqa: E731
        return (zeros(D, D), zeros(D)), (zeros(D, d), zeros(D, d), zeros(D, D, d))

    def _kv(self, x: torch.Tensor, W_kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = F.linear(x, W_kv).unflatten(-1, (2, self.heads, self.head_dim)).unbind(-3)
        return k, v

    def forward(self, x: torch.Tensor, state: Tensors, start: torch.Tensor,
                bptt: bool = False) -> tuple[torch.Tensor, Tensors, Segment]:
        """x ``[B, T, D_in]`` → (y ``[B, T, n]``, state, segment)."""
        k, v = self._kv(x, self.W_kv if bptt else self.W_kv.detach())
        q = _phi(self.W_q(x).unflatten(-1, (self.heads, self.head_dim)))[0]
        (S, z), reads, norms = state, [], []
        for k_t, v_t, q_t, start_t in zip(k.unbind(1), v.unbind(1), q.unbind(1),
                                          start.unbind(1)):
            S, z = _reset(start_t, (S, z))
            phi_k = _phi(k_t)[0]
            S = S + phi_k.unsqueeze(-1) * v_t.unsqueeze(-2)
            z = z + phi_k
            norm = (z * q_t).sum(-1, keepdim=True) + self.eps
            reads.append((q_t.unsqueeze(-2) @ S).squeeze(-2) / norm)
            norms.append(norm.detach())
        top = torch.stack(reads, dim=1)  # o_t [B, T, H, D]
        if not bptt:
            _keep_grad(top)
        y = self.out(top.flatten(-2))
        saved = (x.detach(), q.detach(), top.detach(), torch.stack(norms, dim=1))
        return y, (S, z), Segment(saved, top, start)

    @torch.no_grad()
    def rtrl_backward(self, segment: Segment, sens: Tensors) -> Tensors:
        """Add Σ_t dL/dθ to W_k, W_v's ``.grad`` and return the sensitivities at the end:
        dL/dW_v[c] = (g_c / n) φ(q)ᵀ P,  dL/dW_k[a] = (φ(q)_a / n) (Σ_c g_c Q[a, c] − (g · o) R[a])
        per step, with g = ∂L/∂o_t, n = z_tᵀφ(q_t) + ε (∂o/∂z = −φ(q) oᵀ / n)."""
        x, q, o, norm = segment.saved
        top = segment.top.grad if segment.top.grad is not None else torch.zeros_like(o)
        k, v = self._kv(x, self.W_kv)
        P, R, Q = sens
        H, D = self.heads, self.head_dim
        gk = torch.zeros(H, D, self.d_in, dtype=x.dtype)
        gv = torch.zeros_like(gk)
        steps = zip(x.unbind(1), k.unbind(1), v.unbind(1), q.unbind(1), o.unbind(1),
                    norm.unbind(1), top.unbind(1), segment.start.unbind(1))
        for x_t, k_t, v_t, q_t, o_t, n_t, g, start_t in steps:
            P, R, Q = _reset(start_t, (P, R, Q))
            phi_k, dphi_k = _phi(k_t)
            xs = x_t[:, None, None, :]
            P = P + phi_k.unsqueeze(-1) * xs
            R = R + dphi_k.unsqueeze(-1) * xs
            Q = Q + (dphi_k.unsqueeze(-1) * v_t.unsqueeze(-2)).unsqueeze(-1) * xs.unsqueeze(-2)
            s = g / n_t
            gv += torch.einsum("bhc,bha,bhad->hcd", s, q_t, P)
            gk += torch.einsum("bha,bhc,bhacd->had", q_t, s, Q)
            gk -= torch.einsum("bha,bh,bhad->had", q_t, (s * o_t).sum(-1), R)
        _add_grad(self.W_kv, torch.cat([gk.flatten(0, 1), gv.flatten(0, 1)]))
        return P, R, Q
