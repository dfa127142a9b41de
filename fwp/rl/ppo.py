"""Proximal policy optimisation (Schulman et al. 2017) with a recurrent core.

Why PPO and not the papers' IMPALA with V-trace (Espeholt et al. 2018; used by Irie et al.
NeurIPS 2021 on Atari and ICML 2022 on ProcGen through torchbeast): V-trace corrects the policy
lag of actors that run asynchronously on other machines. Here the environments step in the
learner's process (:func:`fwp.rl.envs.make_vector_env`), every rollout comes from the current
policy, the importance weights of V-trace are all 1 and it reduces to n-step advantage
actor-critic. PPO reuses each rollout for several clipped epochs, the better use of frames on
two CPU cores, and is the recurrent baseline the field's small-scale libraries keep (CleanRL's
``ppo_atari_lstm``, SB3-contrib's RecurrentPPO). Our choice; the R2AC learner of Irie et al.
(ICLR 2024) is in :mod:`fwp.rl.r2ac`.

Recurrent PPO as in CleanRL: a rollout of ``rollout`` steps × ``n_envs``; the core's state at
the rollout's start is stored; each update re-runs the core over the whole rollout from that
state, minibatches are sets of environments (so the sequences stay whole); gradients are
truncated at rollout boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from fwp.layers import detach_state, map_state
from fwp.rl.agent import Agent
from fwp.rl.envs import EnvSpec, clip_reward


@dataclass
class Rollout:
    """One rollout, ``[N, T]`` per step (N envs, T steps), and the state it started from."""

    obs: torch.Tensor
    start: torch.Tensor
    actions: torch.Tensor
    logp: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    initial_state: Any
    next_value: torch.Tensor
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None


@dataclass
class Episodes:
    """Returns and lengths (in agent steps) of the episodes finished, per task index."""

    returns: list[tuple[int, float]] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    def add(self, info: dict, n_tasks: int) -> None:
        final = info.get("final_info") or {}
        if "episode" not in final:
            return
        ep = final["episode"]
        for b in np.flatnonzero(final["_episode"]):
            self.returns.append((int(b) % n_tasks, float(ep["r"][b])))
            self.lengths.append(int(ep["l"][b]))


class Actor:
    """The vector environments with the agent's carried state: what a rollout continues."""

    def __init__(self, envs: Any, spec: EnvSpec, seed: int) -> None:
        self.envs, self.spec = envs, spec
        obs, _ = envs.reset(seed=seed)
        self.obs = torch.as_tensor(obs, dtype=torch.float32)
        self.start = torch.ones(envs.num_envs, dtype=torch.bool)
        self.state: Any = None

    @torch.no_grad()
    def rollout(self, agent: Agent, steps: int, gamma: float, episodes: Episodes) -> Rollout:
        initial = detach_state(self.state)
        obs, start, actions, logp, values, rewards, dones = [], [], [], [], [], [], []
        for _ in range(steps):
            logits, value, state = agent(self.obs[:, None], self.state, self.start[:, None])
            dist = torch.distributions.Categorical(logits=logits[:, 0])
            action = dist.sample()
            next_obs, reward, terminated, truncated, info = self.envs.step(action.numpy())
            reward = clip_reward(reward) if self.spec.clip_rewards else reward
            reward = torch.as_tensor(reward, dtype=torch.float32)
            cut = torch.as_tensor(truncated & ~terminated)
            if bool(cut.any()):  # a time limit is not a terminal state: bootstrap V(last obs)
                reward = reward + gamma * cut * self._final_value(agent, state, info)
            obs.append(self.obs), start.append(self.start), actions.append(action)
            logp.append(dist.log_prob(action)), values.append(value[:, 0])
            rewards.append(reward)
            done = torch.as_tensor(terminated | truncated)
            dones.append(done)
            episodes.add(info, len(self.spec.tasks))
            self.obs = torch.as_tensor(next_obs, dtype=torch.float32)
            self.start, self.state = done, state
        _, next_value, _ = agent(self.obs[:, None], self.state, self.start[:, None])
        seq = [torch.stack(xs, dim=1) for xs in (obs, start, actions, logp, values, rewards, dones)]
        return Rollout(*seq, initial, next_value[:, 0])

    def _final_value(self, agent: Agent, state: Any, info: dict) -> torch.Tensor:
        final = torch.as_tensor(np.stack([
            o if has else np.zeros(self.obs.shape[1:], np.float32)
            for o, has in zip(info["final_obs"], info["_final_obs"])
        ]), dtype=torch.float32)
        no_start = torch.zeros(len(final), 1, dtype=torch.bool)
        return agent(final[:, None], state, no_start)[1][:, 0]


def gae(rollout: Rollout, gamma: float, lam: float) -> None:
    """Generalised advantage estimation (Schulman et al. 2016), in place:
    δ_t = r_t + γ V_{t+1} (1 − done_t) − V_t,  A_t = δ_t + γλ (1 − done_t) A_{t+1}."""
    T = rollout.rewards.shape[1]
    advantages = torch.zeros_like(rollout.rewards)
    next_adv = torch.zeros_like(rollout.next_value)
    next_value = rollout.next_value
    for t in reversed(range(T)):
        alive = (~rollout.dones[:, t]).float()
        delta = rollout.rewards[:, t] + gamma * next_value * alive - rollout.values[:, t]
        next_adv = delta + gamma * lam * alive * next_adv
        advantages[:, t] = next_adv
        next_value = rollout.values[:, t]
    rollout.advantages = advantages
    rollout.returns = advantages + rollout.values


@dataclass
class PPOSettings:
    clip: float
    epochs: int
    minibatches: int
    ent_coef: float
    vf_coef: float
    max_grad_norm: float


def ppo_loss(agent: Agent, rollout: Rollout, envs: torch.Tensor, s: PPOSettings
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped surrogate, value and entropy loss on the sequences of envs ``envs``."""
    state = map_state(lambda t: t[envs], rollout.initial_state)
    logits, value, _ = agent(rollout.obs[envs], state, rollout.start[envs])
    dist = torch.distributions.Categorical(logits=logits)
    logp = dist.log_prob(rollout.actions[envs])
    ratio = (logp - rollout.logp[envs]).exp()
    adv = rollout.advantages[envs]
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    policy_loss = -torch.min(ratio * adv, ratio.clamp(1 - s.clip, 1 + s.clip) * adv).mean()
    value_loss = 0.5 * F.mse_loss(value, rollout.returns[envs])
    entropy = dist.entropy().mean()
    loss = policy_loss + s.vf_coef * value_loss - s.ent_coef * entropy
    stats = {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(),
             "entropy": entropy.item(),
             "clip_frac": ((ratio - 1).abs() > s.clip).float().mean().item()}
    return loss, stats


def ppo_update(agent: Agent, optimizer: torch.optim.Optimizer, rollout: Rollout,
               s: PPOSettings) -> dict[str, float]:
    """``epochs`` passes over the rollout in ``minibatches`` groups of whole env sequences."""
    N = rollout.obs.shape[0]
    totals: dict[str, float] = {}
    count = 0
    for _ in range(s.epochs):
        for envs in torch.randperm(N).chunk(s.minibatches):
            loss, stats = ppo_loss(agent, rollout, envs, s)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(agent.parameters(), s.max_grad_norm)
            optimizer.step()
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + value
            count += 1
    return {key: value / count for key, value in totals.items()}
