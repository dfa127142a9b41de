"""Continuous input paths X(t) through observations x_i at knots t_i, with X and dX/dt.

The learning-rule fields read the path (and its derivative) at whatever times the solver picks.
Piece i is the interval [t_{i−1}, t_i): closed on the left, so a solver step that starts at
t_{i−1} reads the piece that leads to observation i, and the fixed-step solvers are run with
``perturb`` so that a step's last stage at t_i still reads piece i (torchdiffeq evaluates it
just before t_i). Output at t_i thus depends on x_0 … x_i only: both paths are causal.

- ``hold``: X(t) = x_i on piece i (the next observation, held), dX/dt = (x_i − x_{i−1}) /
  (t_i − t_{i−1}). With unit steps this is the EigenWorms setting of the public code, whose
  ODE reads one depth-1 log-signature piece (an increment) per unit interval.
- ``linear``: X(t) = x_{i−1} + (t − t_{i−1}) dX/dt, the same dX/dt.
- ``cubic``: the natural cubic spline of torchcde (Kidger et al.'s, as the public Speech Commands
  and PhysioNet code), smooth but not causal: X near t_i depends on later observations.
"""

from __future__ import annotations

import torch

from fwp.errors import UserError

INTERPOLATIONS = ("hold", "linear", "cubic")


class PiecewisePath:
    """The ``hold`` or ``linear`` path of ``x [B, n, C]`` at knots ``t [n]`` (n ≥ 2)."""

    def __init__(self, t: torch.Tensor, x: torch.Tensor, kind: str) -> None:
        self.t, self.x, self.kind = t, x, kind
        self.slopes = (x[:, 1:] - x[:, :-1]) / (t[1:] - t[:-1]).unsqueeze(-1)

    def piece(self, t: torch.Tensor) -> int:
        return int(torch.searchsorted(self.t, t.detach().reshape(1), right=True).clamp(
            1, len(self.t) - 1))

    def evaluate(self, t: torch.Tensor) -> torch.Tensor:
        i = self.piece(t)
        if self.kind == "hold":
            return self.x[:, i]
        return self.x[:, i - 1] + (t - self.t[i - 1]) * self.slopes[:, i - 1]

    def derivative(self, t: torch.Tensor) -> torch.Tensor:
        return self.slopes[:, self.piece(t) - 1]


def make_path(kind: str, t: torch.Tensor, x: torch.Tensor):
    """A path with ``evaluate(t)`` and ``derivative(t)`` (``[B, C]`` each) through ``x [B, n, C]``
    at knots ``t [n]``: :class:`PiecewisePath` or torchcde's ``CubicSpline``."""
    if kind in ("hold", "linear"):
        return PiecewisePath(t, x, kind)
    if kind == "cubic":
        torchcde = import_solver("torchcde")
        return torchcde.CubicSpline(torchcde.natural_cubic_coeffs(x, t), t)
    raise UserError(f"unknown interpolation {kind!r}; choose one of {INTERPOLATIONS}")


def import_solver(name: str):
    """torchdiffeq or torchcde, with the install line if missing (the ``series`` extra)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise UserError(
            f"continuous-time layers need {name}: pip install -e \".[series]\" "
            f"(or pip install {name})"
        ) from error
