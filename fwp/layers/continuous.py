"""Continuous-time layers: fast weights programmed by a learning-rule ODE, and the neural CDE.

Continuous-time fast weight programmers (Irie, Faccio & Schmidhuber, NeurIPS 2022; public code
IDSIA/neuraldiffeq-fwp): the layer's input sequence x_0 … x_{T−1} at times t_0 < … < t_{T−1}
becomes a path X(t) (:mod:`fwp.ops.continuous.paths`); a slow net reads it and the fast weight
matrix of each head follows the learning rule's vector field (:mod:`fwp.ops.continuous.rules`)

    dS/dt = F_rule(S(t), k(t), v(t), β(t)),   [k̃, ṽ, b̃](t) = W_kvb LN(W_in u(t)),

with u = X (``drive="x"``: the public code's ODE models, ``FastWeightODE``) or, for
``drive="dx"``, keys and rates from u = dX/dt and values ṽ = W_v X (the public code's
``FastWeightCDEv2``, its Speech Commands and PhysioNet model; for Hebb and Oja the public CDE
variants split keys and values differently: we use this one split for all three rules, so only
the rule differs). At each observation the layer reads y_i = W_out S(t_i)ᵀ q_i,
q_i = softmax(W_q LN(W_in u_i)), as the public models read at the last time.

S(t_0) is one write from S = 0 with the first observation, F(0, x_0), as in the public code
(``z0 = update_net(X(t0))``): an Euler step of size 1 from rest. With a piecewise-constant path
(``interpolation="hold"``), unit time steps and ``method="euler"``, ``ct_delta`` is therefore
DeltaNet's recurrence with keys softmax(k̃), values tanh(ṽ) and β = σ(b̃), and ``ct_hebb`` the
sum rule with values β·tanh(ṽ) (the tests check both in float64).

Times: ``forward(x, state=None, times=None)``; ``times [T]`` (shared by the batch, strictly
increasing) default to unit steps after the state's last time (0, 1, … without a state). The
state is ``{"z": S or z, "time": [B], "x": [B, d_model]}``: the last observation and its time,
so that a continuation integrates the interval between the two pieces and a sequence run in
pieces equals the whole (not with ``cubic``, whose spline reads the whole series).
Missing observations are filled before the layer (``fwp.series`` interpolates them, as the
paper's data pipeline does); a NaN reaching the layer is refused.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from fwp.errors import UserError
from fwp.layers.fast_weights import head_dim_for, split_heads
from fwp.layers.registry import register_layer
from fwp.ops.continuous import (
    INTERPOLATIONS,
    PiecewisePath,
    Solver,
    delta_field,
    hebb_field,
    make_path,
    oja_field,
    solve,
)

DRIVES = ("x", "dx")


class ContinuousLayer(nn.Module):
    """What every continuous-time layer shares: times, the path, the solve, the state.

    A subclass defines ``initial(x0, u0)`` (z at the first observation), ``field(path, t, z)``
    (dz/dt) and ``readout(zs [T, B, ...], x, slopes)`` (``[B, T, d_model]``)."""

    def __init__(self, interpolation: str, method: str, substeps: int | None,
                 rtol: float | None, atol: float | None, adjoint: bool) -> None:
        super().__init__()
        if interpolation not in INTERPOLATIONS:
            raise UserError(f"unknown interpolation {interpolation!r}; choose one of "
                            f"{INTERPOLATIONS}")
        self.interpolation = interpolation
        self.solver = Solver(method, substeps, rtol, atol, adjoint)

    def initial(self, x0: torch.Tensor, u0: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def field(self, path: Any, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def readout(self, zs: torch.Tensor, x: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, state: dict | None = None, times: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict]:
        times = observation_times(x, state, times)
        knots, values = times, x
        if state is not None:
            if self.interpolation == "cubic":
                raise UserError("a cubic spline reads the whole series, so it cannot continue "
                                "from a state; use interpolation='linear' or 'hold'")
            knots = torch.cat([state["time"][:1].to(times), times])
            values = torch.cat([state["x"].unsqueeze(1), x], dim=1)
        path = make_path(self.interpolation, knots, values) if len(knots) > 1 else None
        slopes = observation_slopes(path, knots, values, x.shape[1])
        if state is None:
            z0 = self.initial(x[:, 0], slopes[:, 0])
        else:
            z0 = state["z"]
        if path is None:
            zs = z0.unsqueeze(0)
        else:
            zs = solve(partial(self.field, path), z0, knots, self.solver,
                       (*self.parameters(), values))
            zs = zs[1:] if state is not None else zs
        new_state = {"z": zs[-1], "time": times[-1:].expand(x.shape[0]).clone(),
                     "x": x[:, -1]}
        return self.readout(zs, x, slopes), new_state


def observation_times(
    x: torch.Tensor, state: dict | None, times: torch.Tensor | None
) -> torch.Tensor:
    """The checked times ``[T]`` of ``x [B, T, C]``: given, or unit steps after the state's."""
    if x.dim() != 3 or x.shape[1] == 0:
        raise UserError(f"a continuous-time layer needs x [B, T, d_model] with T ≥ 1 "
                        f"observations, got shape {tuple(x.shape)} (an empty series?)")
    if not torch.isfinite(x).all():
        raise UserError("the input holds NaN or inf: fill missing observations before the layer "
                        "(fwp series interpolates them, as the paper does)")
    start = None if state is None else state["time"][0]
    if times is None:
        first = 0.0 if start is None else float(start) + 1.0
        return first + torch.arange(x.shape[1], dtype=x.dtype, device=x.device)
    times = torch.as_tensor(times, dtype=x.dtype, device=x.device)
    if times.shape != (x.shape[1],) or not torch.isfinite(times).all():
        raise UserError(f"times must be {x.shape[1]} finite numbers (one per observation, shared "
                        f"by the batch), got shape {tuple(times.shape)}")
    if (times[1:] <= times[:-1]).any() or (start is not None and times[0] <= start):
        raise UserError("observation times must be strictly increasing (and after the state's "
                        "last time); sort the observations and merge repeated times")
    return times


def observation_slopes(path: Any, knots: torch.Tensor, values: torch.Tensor,
                       T: int) -> torch.Tensor:
    """dX/dt at each of the last T knots ``[B, T, C]``, from the left (causal); 0 at a first
    observation without a state (the path starts at rest: our choice)."""
    if path is None:
        return torch.zeros_like(values[:, -T:])
    if not isinstance(path, PiecewisePath):  # torchcde's cubic spline
        slopes = torch.stack([path.derivative(t) for t in knots], dim=1)
        return slopes[:, -T:]
    slopes = path.slopes
    if slopes.shape[1] < T:
        slopes = torch.cat([torch.zeros_like(slopes[:, :1]), slopes], dim=1)
    return slopes[:, -T:]


class ContinuousFWP(ContinuousLayer):
    """A continuous-time FWP layer (module docstring); each registered subclass defines its
    rule's ``rule_field``."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        head_dim: int | None = None,
        drive: str = "x",
        interpolation: str = "linear",
        method: str = "rk4",
        substeps: int | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        adjoint: bool = False,
    ) -> None:
        super().__init__(interpolation, method, substeps, rtol, atol, adjoint)
        if drive not in DRIVES:
            raise UserError(f"unknown drive {drive!r}; choose one of {DRIVES}")
        self.n_heads, self.head_dim = n_heads, head_dim_for(d_model, n_heads, head_dim)
        self.drive = drive
        H, D = n_heads, self.head_dim
        self.inp = nn.Linear(d_model, H * D)
        self.norm = nn.LayerNorm(H * D)
        if drive == "x":
            self.kvb = nn.Linear(H * D, H * (2 * D + 1))
        else:
            self.kb = nn.Linear(H * D, H * (D + 1))
            self.value = nn.Linear(d_model, H * D)
        self.query = nn.Linear(H * D, H * D)
        self.out = nn.Linear(H * D, d_model)

    def slow_net(self, u: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """k̃, ṽ ``[..., H, D]`` and b̃ ``[..., H]`` before their activations, from the drive
        u (X or dX/dt) and, for ``drive="dx"``, the values' input X."""
        D = self.head_dim
        h = self.norm(self.inp(u))
        if self.drive == "x":
            k, v, b = split_heads(self.kvb(h), self.n_heads).split([D, D, 1], dim=-1)
        else:
            k, b = split_heads(self.kb(h), self.n_heads).split([D, 1], dim=-1)
            v = split_heads(self.value(x), self.n_heads)
        return k, v, b.squeeze(-1)

    def rule_field(self, k: torch.Tensor, v: torch.Tensor, b: torch.Tensor,
                   S: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def initial(self, x0: torch.Tensor, u0: torch.Tensor) -> torch.Tensor:
        k, v, b = self.slow_net(x0 if self.drive == "x" else u0, x0)
        S = k.new_zeros(*k.shape, self.head_dim)
        return self.rule_field(k, v, b, S)

    def field(self, path: Any, t: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        x = path.evaluate(t)
        k, v, b = self.slow_net(x if self.drive == "x" else path.derivative(t), x)
        return self.rule_field(k, v, b, S)

    def readout(self, Ss: torch.Tensor, x: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
        u = x if self.drive == "x" else slopes
        q = torch.softmax(split_heads(self.query(self.norm(self.inp(u))), self.n_heads), dim=-1)
        o = torch.einsum("tbhkv,bthk->bthv", Ss, q)
        return self.out(o.flatten(-2))


@register_layer("ct_hebb")
class ContinuousHebb(ContinuousFWP):
    """Continuous-time FWP with Hebb's rule dS/dt = σ(b̃) softmax(k̃) ⊗ tanh(ṽ): the
    continuous sum rule (linear transformer)."""

    def rule_field(self, k, v, b, S):
        return hebb_field(torch.softmax(k, -1), torch.tanh(v), torch.sigmoid(b))


@register_layer("ct_oja")
class ContinuousOja(ContinuousFWP):
    """Continuous-time FWP with Oja's rule dS/dt = σ(b̃) softmax(k̃ − S tanh(ṽ)) ⊗ tanh(ṽ)."""

    def rule_field(self, k, v, b, S):
        return oja_field(k, torch.tanh(v), torch.sigmoid(b), S)


@register_layer("ct_delta")
class ContinuousDelta(ContinuousFWP):
    """Continuous-time FWP with the delta rule dS/dt = σ(b̃) k ⊗ (tanh(ṽ) − Sᵀ k),
    k = softmax(k̃); ``post_tanh``: σ(b̃) k ⊗ tanh(ṽ − Sᵀ k) (the public code's option, used for
    its EigenWorms ODE and PhysioNet "OI" runs)."""

    def __init__(self, d_model: int, n_heads: int, post_tanh: bool = False,
                 **options: Any) -> None:
        super().__init__(d_model, n_heads, **options)
        if not isinstance(post_tanh, bool):
            raise UserError(f"post_tanh must be true or false, got {post_tanh!r}")
        self.post_tanh = post_tanh

    def rule_field(self, k, v, b, S):
        v = v if self.post_tanh else torch.tanh(v)
        return delta_field(torch.softmax(k, -1), v, torch.sigmoid(b), S, self.post_tanh)


@register_layer("ncde")
class NeuralCDE(ContinuousLayer):
    """Neural controlled differential equation (Kidger et al., NeurIPS 2020):
    dz = f_θ(z) dX, i.e. dz/dt = f_θ(z(t)) dX/dt, z(t_0) = W_0 x_0, y_i = W_out z(t_i).
    f_θ is the "FinalTanh" MLP of the NCDE code that the public FWP code kept: ``n_hidden_layers``
    ReLU layers of width ``hidden_hidden``, a linear map to ``[hidden, d_model]``, then tanh.
    ``n_heads`` is accepted and ignored. The path is this layer's input sequence."""

    def __init__(
        self,
        d_model: int,
        n_heads: int = 1,
        hidden: int | None = None,
        hidden_hidden: int | None = None,
        n_hidden_layers: int = 3,
        interpolation: str = "linear",
        method: str = "rk4",
        substeps: int | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        adjoint: bool = False,
    ) -> None:
        super().__init__(interpolation, method, substeps, rtol, atol, adjoint)
        if n_hidden_layers < 1:
            raise UserError(f"n_hidden_layers must be at least 1 (got {n_hidden_layers})")
        self.hidden = hidden or d_model
        width = hidden_hidden or self.hidden
        self.initial_net = nn.Linear(d_model, self.hidden)
        layers: list[nn.Module] = [nn.Linear(self.hidden, width), nn.ReLU()]
        for _ in range(n_hidden_layers - 1):
            layers += [nn.Linear(width, width), nn.ReLU()]
        layers.append(nn.Linear(width, self.hidden * d_model))
        self.f = nn.Sequential(*layers)
        self.out = nn.Linear(self.hidden, d_model)

    def initial(self, x0: torch.Tensor, u0: torch.Tensor) -> torch.Tensor:
        return self.initial_net(x0)

    def field(self, path: Any, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        A = torch.tanh(self.f(z)).unflatten(-1, (self.hidden, -1))
        return (A @ path.derivative(t).unsqueeze(-1)).squeeze(-1)

    def readout(self, zs: torch.Tensor, x: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
        return self.out(zs.transpose(0, 1))
