"""R2AC: an actor-critic whose one recurrent layer learns by exact RTRL (Irie, Gopalakrishnan &
Schmidhuber, ICLR 2024), against the same learner with truncated BPTT.

Each update takes one rollout of ``rollout`` steps (on-policy, as the paper's learner), and
minimises the advantage actor-critic loss (GAE advantages, value regression, entropy bonus)
with one optimiser step. The cell's recurrent weights get

- ``gradient="rtrl"``: the exact gradient of the rollout's loss through the whole past of every
  episode (the sensitivities are carried from rollout to rollout and reset where an episode
  starts; they were computed with the parameters of their time, as in any online RTRL);
- ``gradient="tbptt"``: backpropagation through the rollout only (truncated at its start).

Everything else (encoder, output gate or read, heads) learns by backpropagation within the
rollout in both, as the paper's vision module does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fwp.rl.agent import build_encoder
from fwp.rl.config import RLConfig
from fwp.rl.envs import EnvSpec
from fwp.rl.ppo import Actor, Episodes, Rollout, gae
from fwp.rl.rtrl import ELSTM, Segment, SumFWP


class R2ACAgent(nn.Module):
    """Encoder → one RTRL cell (``elstm`` or ``fwp_sum``) → LayerNorm → policy and value."""

    def __init__(self, spec: EnvSpec, cell: str, d_model: int, heads: int) -> None:
        super().__init__()
        self.encoder = build_encoder(spec, d_model)
        if cell == "elstm":
            self.cell: ELSTM | SumFWP = ELSTM(d_model, d_model)
        else:
            self.cell = SumFWP(d_model, heads, d_model // heads)
        self.norm = nn.LayerNorm(d_model)
        self.policy = nn.Linear(d_model, spec.n_actions)
        self.value = nn.Linear(d_model, 1)
        nn.init.orthogonal_(self.policy.weight, 0.01)
        nn.init.zeros_(self.policy.bias)

    def segment(self, obs: torch.Tensor, state: Any, start: torch.Tensor, bptt: bool
                ) -> tuple[torch.Tensor, torch.Tensor, Any, Segment]:
        B, T = start.shape
        if state is None:
            state = self.cell.initial(B)[0]
        x = self.encoder(obs.flatten(0, 1)).unflatten(0, (B, T))
        y, state, segment = self.cell(x, state, start, bptt=bptt)
        h = self.norm(y)
        return self.policy(h), self.value(h).squeeze(-1), state, segment

    def forward(self, obs: torch.Tensor, state: Any, start: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        logits, value, state, _ = self.segment(obs, state, start, bptt=True)
        return logits, value, state


class R2ACLearner:
    """One on-policy actor-critic update per rollout; the cell by RTRL or truncated BPTT."""

    def __init__(self, agent: R2ACAgent, config: RLConfig) -> None:
        self.agent, self.config = agent, config
        self.rtrl = config.network.gradient == "rtrl"
        self.optimizer = torch.optim.Adam(agent.parameters(), lr=config.lr, eps=1e-5)
        self.sens: Any = None

    def update(self, actor: Actor, episodes: Episodes) -> dict[str, float]:
        c = self.config
        rollout = actor.rollout(self.agent, c.rollout, c.gamma, episodes)
        gae(rollout, c.gamma, c.gae_lambda)
        logits, value, _, segment = self.agent.segment(
            rollout.obs, rollout.initial_state, rollout.start, bptt=not self.rtrl)
        loss, stats = a2c_loss(logits, value, rollout, c.ent_coef, c.vf_coef)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.rtrl:
            if self.sens is None:
                self.sens = self.agent.cell.initial(rollout.obs.shape[0])[1]
            self.sens = self.agent.cell.rtrl_backward(segment, self.sens)
        torch.nn.utils.clip_grad_norm_(self.agent.parameters(), c.max_grad_norm)
        self.optimizer.step()
        return stats


def a2c_loss(logits: torch.Tensor, value: torch.Tensor, rollout: Rollout, ent_coef: float,
             vf_coef: float) -> tuple[torch.Tensor, dict[str, float]]:
    """−log π(a_t) A_t + vf_coef · ½(V_t − R_t)² − ent_coef · H(π), means over the rollout."""
    dist = torch.distributions.Categorical(logits=logits)
    policy_loss = -(dist.log_prob(rollout.actions) * rollout.advantages).mean()
    value_loss = 0.5 * F.mse_loss(value, rollout.returns)
    entropy = dist.entropy().mean()
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy
    return loss, {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(),
                  "entropy": entropy.item()}
