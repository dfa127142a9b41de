"""One call that solves dz/dt = f(t, z) through a series of observation times with torchdiffeq.

Fixed-step methods take ``substeps`` steps per interval between observations (a grid that holds
every observation time, so a path's kinks and jumps fall on step boundaries); adaptive methods
are told the observation times as ``jump_t``, where the path's derivative may jump. ``adjoint``
computes gradients by solving the adjoint equation backwards (torchdiffeq's
``odeint_adjoint``): memory constant in the number of steps, at the cost of a second solve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from fwp.errors import UserError
from fwp.ops.continuous.paths import import_solver

FIXED_METHODS = ("euler", "midpoint", "rk4")
ADAPTIVE_METHODS = ("dopri5", "bosh3", "adaptive_heun", "fehlberg2", "dopri8")


@dataclass(frozen=True)
class Solver:
    """How to solve: ``method`` (fixed: euler, midpoint, rk4; adaptive: dopri5, bosh3, ...),
    ``substeps`` (fixed only, default 1), ``rtol``/``atol`` (adaptive only, default 1e-4/1e-6,
    torchcde's defaults), ``adjoint``. A setting that does not apply to the method is refused."""

    method: str = "rk4"
    substeps: int | None = None
    rtol: float | None = None
    atol: float | None = None
    adjoint: bool = False

    def __post_init__(self) -> None:
        if self.method not in FIXED_METHODS + ADAPTIVE_METHODS:
            raise UserError(f"unknown ODE method {self.method!r}; choose one of "
                            f"{FIXED_METHODS} (fixed step) or {ADAPTIVE_METHODS} (adaptive)")
        fixed = self.method in FIXED_METHODS
        if fixed and (self.rtol is not None or self.atol is not None):
            raise UserError(f"rtol/atol apply to adaptive methods, not to {self.method!r}; "
                            f"drop them or pick one of {ADAPTIVE_METHODS}")
        if not fixed and self.substeps is not None:
            raise UserError(f"substeps applies to fixed-step methods, not to {self.method!r}; "
                            f"drop it or pick one of {FIXED_METHODS}")
        if self.substeps is not None and self.substeps < 1:
            raise UserError(f"substeps must be at least 1 (got {self.substeps})")
        if not isinstance(self.adjoint, bool):
            raise UserError(f"adjoint must be true or false, got {self.adjoint!r}")


def refined_grid(t: torch.Tensor, substeps: int) -> torch.Tensor:
    """``t [n]`` with ``substeps − 1`` equally spaced points added inside every interval."""
    frac = torch.arange(substeps, dtype=t.dtype, device=t.device) / substeps
    inner = t[:-1, None] + (t[1:] - t[:-1])[:, None] * frac
    return torch.cat([inner.flatten(), t[-1:]])


def solve(
    field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    t: torch.Tensor,
    solver: Solver,
    params: Sequence[torch.Tensor] = (),
) -> torch.Tensor:
    """z at every time of ``t [n]`` (increasing), ``[n, *z0.shape]``, z(t_0) = z0.

    ``params``: every tensor the field reads that needs a gradient (parameters, and the path's
    values when they come from earlier layers); only the adjoint needs them listed.
    """
    torchdiffeq = import_solver("torchdiffeq")
    if solver.method in FIXED_METHODS:
        substeps = solver.substeps or 1
        options: dict = {"perturb": True}
        if substeps > 1:
            options["grid_constructor"] = lambda f, y0, times: refined_grid(times, substeps)
        tolerances: dict = {}
    else:
        options = {"jump_t": t}
        tolerances = {"rtol": solver.rtol or 1e-4, "atol": solver.atol or 1e-6}
    if solver.adjoint:
        wanted = tuple(p for p in params if p.requires_grad)
        return torchdiffeq.odeint_adjoint(field, z0, t, method=solver.method, options=options,
                                          adjoint_params=wanted, **tolerances)
    return torchdiffeq.odeint(field, z0, t, method=solver.method, options=options, **tolerances)
