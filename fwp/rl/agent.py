"""The recurrent actor-critic: observation encoder → any ``fwp.layers.LayerStack`` → policy and
value heads, with the core's state carried across steps and reset where an episode starts.

The state is one entry per block, each a (nested) tuple of tensors with the environment in the
first dimension, so resetting env b touches row b of every tensor and nothing else: no state
leaks between parallel environments (tested in ``tests/rl``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fwp.errors import UserError
from fwp.layers import LAYERS, LayerStack, map_state
from fwp.rl.envs import EnvSpec


def unresettable(name: str) -> str | None:
    """Why layer ``name``'s state cannot be reset per environment (None when it can)."""
    from fwp.layers.continuous import ContinuousLayer

    if name == "transformer":
        return ("its state (a key/value cache) grows with the episode and would hold different "
                "lengths for different environments")
    if issubclass(LAYERS[name], ContinuousLayer):
        return ("its state holds the input path's last point and one time shared by the batch, "
                "and an environment that restarts has no previous point")
    return None


def fresh_state(layer: nn.Module, state: Any) -> Any:
    """The state ``layer`` starts a sequence from (what it uses for ``state=None``), shaped like
    ``state``: zeros, except a tensor shaped like the layer's slow weights ``W0`` (SRWM,
    SR-Delta), which starts at ``W0`` and keeps its gradient; a layer whose ``W0`` is a list
    (``delta_mlp``: one initial weight per fast layer) starts each entry of its state tuple at the
    matching entry. The rule is checked for every registered layer by ``tests/rl/test_agent.py``."""
    W0 = getattr(layer, "W0", None)
    if isinstance(W0, nn.ParameterList):
        if not isinstance(state, (list, tuple)) or len(state) != len(W0):
            raise TypeError(f"{type(layer).__name__}: a state of {len(W0)} weights expected")
        return type(state)(w.to(t.dtype).expand_as(t) for w, t in zip(W0, state))

    def fresh(t: torch.Tensor) -> torch.Tensor:
        if W0 is not None and t.shape[1:] == W0.shape:
            return W0.to(t.dtype).expand_as(t)
        return torch.zeros_like(t)

    return map_state(fresh, state)


def reset_state(stack: LayerStack, state: list[Any] | None, start: torch.Tensor) -> Any:
    """``state`` with the rows of the environments where ``start [B]`` is true set to the fresh
    state; the other rows pass through untouched (and keep their graph)."""
    if state is None or not bool(start.any()):
        return state
    out = []
    for block, s in zip(stack.blocks, state):
        fresh = fresh_state(block.layer, s)
        out.append(_select(start, fresh, s))
    return out


def _select(mask: torch.Tensor, a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)
    if isinstance(a, (list, tuple)):
        return type(a)(_select(mask, x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return {key: _select(mask, a[key], b[key]) for key in a}
    return a


def build_encoder(spec: EnvSpec, d_model: int) -> nn.Module:
    """Features → MLP; a MiniGrid view (H × W × C) → the small three-layer CNN common for
    MiniGrid; Atari frames (C × 84 × 84) → the CNN of Mnih et al. (2015)."""
    shape = spec.observation_space.shape
    if spec.kind == "vector":
        return nn.Sequential(nn.Linear(shape[0], d_model), nn.Tanh(),
                             nn.Linear(d_model, d_model), nn.Tanh())
    if spec.kind == "grid":
        h, w, c = shape
        conv = nn.Sequential(
            Channels(), nn.Conv2d(c, 16, 2), nn.ReLU(), nn.Conv2d(16, 32, 2), nn.ReLU(),
            nn.Conv2d(32, 64, 2), nn.ReLU(), nn.Flatten(),
        )
        n = conv(torch.zeros(1, h, w, c)).shape[-1]
        return nn.Sequential(conv, nn.Linear(n, d_model), nn.ReLU())
    c = shape[0]
    conv = nn.Sequential(
        nn.Conv2d(c, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(),
    )
    n = conv(torch.zeros(1, *shape)).shape[-1]
    return nn.Sequential(conv, nn.Linear(n, d_model), nn.ReLU())


class Channels(nn.Module):
    """[N, H, W, C] → [N, C, H, W]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


class Agent(nn.Module):
    """π(a | history) and V(history) from an encoder, a LayerStack core and two linear heads.

    ``forward(obs [B, T, *obs_shape], state, start [B, T])`` resets env b's state before step t
    where ``start[b, t]`` (its observation starts an episode) and returns ``(logits [B, T, A],
    value [B, T], state)``. The sequence is cut only where some env starts an episode, so a
    chunked layer sees the longest pieces it can.
    """

    def __init__(self, spec: EnvSpec, layers: list[str], d_model: int, heads: int, d_ff: int,
                 residual: str = "pre_norm",
                 layer_options: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        for name in layers:
            if (why := unresettable(name)) is not None:
                raise UserError(f"layer {name!r} cannot be an agent's core: {why}; choose a "
                                f"recurrent or fast weight layer")
        self.encoder = build_encoder(spec, d_model)
        self.core = LayerStack(layers, d_model, heads, d_ff, residual=residual,
                               layer_options=layer_options)
        self.norm = nn.LayerNorm(d_model)
        self.policy = nn.Linear(d_model, spec.n_actions)
        self.value = nn.Linear(d_model, 1)
        # Small policy init: near-uniform first actions (Andrychowicz et al. 2021, PPO choices).
        nn.init.orthogonal_(self.policy.weight, 0.01)
        nn.init.zeros_(self.policy.bias)

    def forward(self, obs: torch.Tensor, state: Any, start: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        B, T = start.shape
        x = self.encoder(obs.flatten(0, 1)).unflatten(0, (B, T))
        cuts = [0] + [t for t in range(1, T) if bool(start[:, t].any())] + [T]
        outs = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            state = reset_state(self.core, state, start[:, a])
            y, state = self.core(x[:, a:b], state)
            outs.append(y)
        h = self.norm(torch.cat(outs, dim=1))
        return self.policy(h), self.value(h).squeeze(-1), state
