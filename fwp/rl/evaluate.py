"""Seeded, reproducible evaluation episodes.

Episode i plays task i mod k (k tasks) with environment seed ``seed + i``, and the actions are
drawn from the policy with a generator seeded by ``seed``: the same agent gives the same
returns on every machine run (up to floating-point differences of the operators). Returns are
the environments' own rewards (unclipped for Atari).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fwp.rl.envs import EnvSpec, make_task


@torch.no_grad()
def run_episodes(policy: Any, spec: EnvSpec, episodes: int, seed: int,
                 greedy: bool = False, max_steps: int = 100_000) -> dict[str, Any]:
    """Play ``episodes`` episodes in lockstep with ``policy(obs [E, 1, …], state, start [E, 1])
    → (logits, value, state)``; returns per-episode returns and lengths, means per task."""
    envs = [make_task(spec.tasks[i % len(spec.tasks)]) for i in range(episodes)]
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    generator = torch.Generator().manual_seed(seed)
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    active = np.ones(episodes, dtype=bool)
    state, start = None, torch.ones(episodes, 1, dtype=torch.bool)
    for _ in range(max_steps):
        logits, _, state = policy(torch.as_tensor(obs, dtype=torch.float32)[:, None], state, start)
        if greedy:
            actions = logits[:, 0].argmax(-1)
        else:
            actions = torch.multinomial(logits[:, 0].softmax(-1), 1, generator=generator)[:, 0]
        start = torch.zeros_like(start)
        for i in np.flatnonzero(active):
            obs[i], reward, terminated, truncated, _ = envs[i].step(int(actions[i]))
            returns[i] += reward
            lengths[i] += 1
            active[i] = not (terminated or truncated)
        if not active.any():
            break
    for env in envs:
        env.close()
    per_task = {task: float(returns[k::len(spec.tasks)].mean())
                for k, task in enumerate(spec.tasks[:episodes])}  # tasks that were played
    return {"episodes": episodes, "seed": seed, "greedy": greedy,
            "mean_return": float(returns.mean()), "per_task": per_task,
            "returns": returns.tolist(), "lengths": lengths.tolist()}
