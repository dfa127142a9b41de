"""Typed configuration of an ``fwp rl`` run (on the configuration core :mod:`fwp.config`).

Defaults are sized for a CPU and CartPole with hidden velocities; the study presets in
``fwp/rl/presets/`` set the other tasks. Values: defaults ← ``--preset NAME`` ← ``--config
FILE`` ← flags.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fwp import config as core
from fwp.config import check_choices, flag_name, option, section
from fwp.errors import UserError

PRESETS = Path(__file__).parent / "presets"
ALGOS = ("ppo", "r2ac")
RTRL_CELLS = ("elstm", "fwp_sum")
GRADIENTS = ("rtrl", "tbptt")


@dataclass
class NetworkConfig:
    """Encoder → ``layers`` blocks of ``model`` (a LayerStack) → policy and value heads (PPO);
    for R2AC, encoder → one ``cell`` trained by RTRL or truncated BPTT → heads."""

    model: str = option("lstm", "core layer of PPO agents (a registered layer)",
                        choices="fwp.layers:LAYERS")
    layers: int = option(1, "blocks of [layer, feed-forward] in the core")
    d_model: int = option(64, "width of the core")
    heads: int = option(4, "heads of the core layer")
    d_ff: int = option(128, "inner size of the feed-forward blocks")
    residual: str = option("pre_norm", "block residual", choices=("pre_norm", "normed"))
    options: dict[str, Any] = option(
        {}, "a keyword option of the core layer class, e.g. n_beta=4 for srwm",
        flag="layer-option")
    cell: str = option("elstm", "R2AC's one-layer recurrent cell", choices=RTRL_CELLS)
    gradient: str = option("rtrl", "R2AC's gradient for the cell: exact RTRL or truncated BPTT "
                           "(cut at every update)", choices=GRADIENTS)


@dataclass
class RLConfig:
    """One training run of an actor-critic on one environment (or several: ``multi:A,B``)."""

    env: str = option("cartpole-pomdp", "environment: cartpole-pomdp, MiniGrid-…, ALE/…, a "
                      "gymnasium id, or multi:A,B,… (one agent, several tasks)")
    network: NetworkConfig = section(NetworkConfig)
    algo: str = option("ppo", "learner: ppo (recurrent PPO) or r2ac (Irie et al. 2024's "
                       "actor-critic with an RTRL cell)", choices=ALGOS)
    frames: int = option(200_000, "environment frames to train for (agent steps × frame skip); "
                         "a re-run with more extends the run", resume="announce")
    n_envs: int = option(8, "parallel environments")
    rollout: int = option(128, "steps per environment per update")
    gamma: float = option(0.99, "discount")
    gae_lambda: float = option(0.95, "GAE λ")
    clip: float = option(0.2, "PPO ratio clip")
    epochs: int = option(4, "PPO epochs per rollout")
    minibatches: int = option(4, "PPO minibatches per epoch (groups of environments)")
    lr: float = option(2.5e-4, "Adam's learning rate (annealed linearly to 0 with --anneal-lr)")
    anneal_lr: bool = option(True, "anneal the learning rate linearly to 0")
    ent_coef: float = option(0.01, "entropy bonus")
    vf_coef: float = option(0.5, "value loss weight")
    max_grad_norm: float = option(0.5, "gradient norm clip")
    seed: int = option(1, "seeds the agent, the action sampling and the training episodes")
    checkpoint_every: int = option(
        50, "updates between validations and checkpoints; every environment restarts there "
        "(seeded by seed and update), so a resumed run is the same run")
    val_episodes: int = option(8, "seeded episodes of the validation at every checkpoint (its "
                               "mean return chooses best.pt)", resume="announce")
    eval_episodes: int = option(32, "evaluation episodes of the final agent (seeded, "
                                "reproducible)", resume="announce")
    eval_seed: int = option(10_000, "episode i of a validation or evaluation plays environment "
                            "seed eval_seed + i", resume="announce")
    threads: int = option(1, "torch CPU threads (0: torch's default)", resume="runtime")

    def validate(self) -> None:
        check_choices(self)
        positive = {"frames": self.frames, "n_envs": self.n_envs, "rollout": self.rollout,
                    "epochs": self.epochs, "minibatches": self.minibatches,
                    "layers": self.network.layers, "d_model": self.network.d_model,
                    "heads": self.network.heads, "checkpoint_every": self.checkpoint_every,
                    "val_episodes": self.val_episodes, "eval_episodes": self.eval_episodes}
        for name, value in positive.items():
            if value < 1:
                raise UserError(f"--{flag_name(name)} must be at least 1 (got {value})")
        if self.minibatches > self.n_envs:
            raise UserError(f"--minibatches {self.minibatches} exceeds --n-envs {self.n_envs}: "
                            f"a minibatch is a group of whole environment sequences")
        if self.network.d_model % self.network.heads:
            raise UserError(f"--d-model {self.network.d_model} is not divisible by --heads "
                            f"{self.network.heads}")
        if not (0 < self.gamma <= 1 and 0 <= self.gae_lambda <= 1):
            raise UserError("--gamma must be in (0, 1] and --gae-lambda in [0, 1]")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive (got {self.lr})")
        self._refuse_other_algo()
        if self.algo == "ppo":
            from fwp.rl.agent import unresettable

            if (why := unresettable(self.network.model)) is not None:
                raise UserError(f"--model {self.network.model} cannot be an agent's core: {why}; "
                                f"choose a recurrent or fast weight layer")

    def _refuse_other_algo(self) -> None:
        """A field of the other learner set away from its default is refused, not ignored."""
        defaults, net_defaults = RLConfig(), NetworkConfig()
        if self.algo == "ppo":
            unused = [n for n in PPO_ONLY[1]
                      if getattr(self.network, n) != getattr(net_defaults, n)]
        else:
            unused = [n for n in PPO_ONLY[0] if getattr(self, n) != getattr(defaults, n)]
            unused += [n for n in PPO_ONLY[2]
                       if getattr(self.network, n) != getattr(net_defaults, n)]
        if unused:
            raise UserError(f"--{flag_name(unused[0])} does not apply to --algo {self.algo}; "
                            f"drop it (or choose the other --algo)")


# Fields only PPO reads, fields only R2AC reads (network), fields only PPO's LayerStack reads.
PPO_ONLY = (("clip", "epochs", "minibatches"), ("cell", "gradient"),
            ("model", "layers", "d_ff", "residual", "options"))


def from_dict(data: dict, where: str = "config") -> RLConfig:
    return core.from_dict(RLConfig, data, where)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", metavar="NAME", help=f"a preset of {PRESETS.name}/ "
                        f"({', '.join(core.preset_names(PRESETS))})")
    parser.add_argument("--config", metavar="FILE", help="a .toml or .json file of fields")
    core.add_flags(parser, RLConfig)


def config_from_args(args: argparse.Namespace) -> RLConfig:
    """Defaults ← preset ← file ← flags; validated."""
    preset = getattr(args, "preset", None)
    path = getattr(args, "config", None)
    config = core.resolve(RLConfig, [
        (f"preset {preset}", core.read_preset(PRESETS, preset, RLConfig) if preset else None),
        (str(path), core.read_file(path, PRESETS, RLConfig) if path else None),
        ("the command line", core.given(args, RLConfig)),
    ])
    config.validate()
    return config
