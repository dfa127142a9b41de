"""Feature maps φ applied to keys and queries before a fast weight write or read.

All act on the last dimension. ``dpfp`` changes the size from D to 2·ν·D (see
:func:`feature_dim`); every other map keeps it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from fwp.errors import UserError


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    """ELU(x) + 1: positive, as the linear transformer (Katharopoulos et al., 2020) uses."""
    return F.elu(x) + 1.0


def sum_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Divide by the sum over the last dimension (for non-negative x)."""
    return x / (x.sum(dim=-1, keepdim=True) + eps)


def elu_plus_one_sum_norm(x: torch.Tensor) -> torch.Tensor:
    """ELU+1 then sum-normalisation, the DeltaNet paper's choice (Schlag et al., 2021)."""
    return sum_norm(elu_plus_one(x))


def softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension, as the SRWM uses for keys, queries and inputs."""
    return torch.softmax(x, dim=-1)


def l2_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """L2-normalised vectors: keeps the delta rule's update a contraction when β ≤ 1."""
    return F.normalize(x, p=2.0, dim=-1, eps=eps)


def dpfp(x: torch.Tensor, nu: int = 1) -> torch.Tensor:
    """Deterministic parameter-free projection (Schlag et al., 2021), output size 2·ν·D.

    With r = [ReLU(x), ReLU(−x)] ∈ R^{2D}, the output concatenates r ⊙ roll(r, i), i = 1..ν.
    """
    if nu < 1:
        raise UserError(f"dpfp needs nu >= 1, got {nu}")
    r = torch.cat([F.relu(x), F.relu(-x)], dim=-1)
    return torch.cat([r * torch.roll(r, shifts=i, dims=-1) for i in range(1, nu + 1)], dim=-1)


FEATURE_MAPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": identity,
    "elu+1": elu_plus_one,
    "elu+1_sum": elu_plus_one_sum_norm,
    "softmax": softmax,
    "l2": l2_norm,
    "dpfp1": lambda x: dpfp(x, 1),
    "dpfp2": lambda x: dpfp(x, 2),
    "dpfp3": lambda x: dpfp(x, 3),
}


def get_feature_map(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The feature map called ``name``; one of :data:`FEATURE_MAPS`."""
    if name not in FEATURE_MAPS:
        raise UserError(f"unknown feature map {name!r}; choose one of {sorted(FEATURE_MAPS)}")
    return FEATURE_MAPS[name]


def feature_dim(name: str, dim: int) -> int:
    """Size of φ(x) for an input of size ``dim``."""
    get_feature_map(name)
    return 2 * int(name[-1]) * dim if name.startswith("dpfp") else dim
