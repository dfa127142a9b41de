"""Continuous-time fast weights: learning rules as vector fields, input paths, the ODE solve.

Irie, Faccio & Schmidhuber (NeurIPS 2022). Solved with torchdiffeq (``pip install -e
".[series]"``); the natural cubic spline comes from torchcde. Neither is imported before use.
"""

from fwp.ops.continuous.paths import INTERPOLATIONS, PiecewisePath, make_path
from fwp.ops.continuous.rules import delta_field, hebb_field, oja_field
from fwp.ops.continuous.solve import ADAPTIVE_METHODS, FIXED_METHODS, Solver, refined_grid, solve

__all__ = [
    "ADAPTIVE_METHODS",
    "FIXED_METHODS",
    "INTERPOLATIONS",
    "PiecewisePath",
    "Solver",
    "delta_field",
    "hebb_field",
    "make_path",
    "oja_field",
    "refined_grid",
    "solve",
]
