"""Training and evaluation of one ``fwp rl`` run, through the run core (:mod:`fwp.runs`).

A run folder holds what :func:`fwp.runs.fit` writes — ``config.json``, ``checkpoint.pt`` and
``best.pt`` (the agent with the best validation return) at every ``checkpoint_every`` updates,
``metrics.jsonl`` (one ``train`` row per update: frames, the returns of the episodes finished,
per task for ``multi:``, losses, frames per second; a ``val`` row per checkpoint), its lock —
and, once finished, ``eval.json`` (seeded evaluation episodes of the final agent). One optimiser
step of the core's loop is one update (a rollout and its PPO epochs, or R2AC's one step).

Exact resume: at every checkpoint every environment restarts (seeded by the run's seed and the
update) and the agent's state with it, in a run that stops there and in one that does not; the
checkpoint holds everything else that the rest of the run draws from (weights, optimiser, every
RNG). So the environments need no state in the checkpoint, and a run resumed from a checkpoint
is the same run, bit for bit on the same machine. A stop by SIGINT / SIGTERM between
checkpoints saves there too; its resumed run restarts the environments at that update (the
unfinished episodes are dropped), so it continues correctly but is no longer bit-identical to
one that did not stop. The rollout before a restart still bootstraps its last value.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fwp.config import read_file, write_atomic
from fwp.errors import RunStopped, UserError
from fwp.rl.agent import Agent
from fwp.rl.config import RLConfig, from_dict
from fwp.rl.envs import EnvSpec, check_env, make_vector_env
from fwp.rl.evaluate import run_episodes
from fwp.rl.ppo import Actor, Episodes, PPOSettings, gae, ppo_update
from fwp.runs import CONFIG, RunFolder, Training, fit, load_checkpoint

EVAL = "eval.json"


def build_policy(spec: EnvSpec, config: RLConfig) -> torch.nn.Module:
    """The agent of ``config`` for ``spec`` (a LayerStack agent for PPO, an RTRL cell's for
    R2AC), initialised from torch's current generator."""
    net = config.network
    if config.algo == "r2ac":
        from fwp.rl.r2ac import R2ACAgent

        return R2ACAgent(spec, net.cell, net.d_model, net.heads)
    options = {net.model: dict(net.options)} if net.options else None
    return Agent(spec, [net.model] * net.layers, net.d_model, net.heads, net.d_ff,
                 net.residual, options)


def frames_per_update(config: RLConfig, spec: EnvSpec) -> int:
    return config.n_envs * config.rollout * spec.frame_skip


def updates_of(config: RLConfig, spec: EnvSpec) -> int:
    return math.ceil(config.frames / frames_per_update(config, spec))


def read_config(run: Path) -> RLConfig:
    if not (Path(run) / CONFIG).is_file():
        raise UserError(f"{run} is not a run folder of fwp rl (no {CONFIG}); train one first")
    return from_dict(read_file(Path(run) / CONFIG), str(Path(run) / CONFIG))


def load_policy(run: Path) -> tuple[RLConfig, EnvSpec, torch.nn.Module]:
    config = read_config(run)
    spec = check_env(config.env)
    policy = build_policy(spec, config)
    policy.load_state_dict(load_checkpoint(RunFolder(run).checkpoint, fix=RLTraining.damaged_fix
                                           )["model"])
    return config, spec, policy


class PPOLearner:
    """Rollout, GAE, clipped epochs: one update of :mod:`fwp.rl.ppo`."""

    def __init__(self, agent: Agent, config: RLConfig) -> None:
        self.agent, self.config = agent, config
        self.optimizer = torch.optim.Adam(agent.parameters(), lr=config.lr, eps=1e-5)
        self.settings = PPOSettings(config.clip, config.epochs, config.minibatches,
                                    config.ent_coef, config.vf_coef, config.max_grad_norm)

    def update(self, actor: Actor, episodes: Episodes) -> dict[str, float]:
        rollout = actor.rollout(self.agent, self.config.rollout, self.config.gamma, episodes)
        gae(rollout, self.config.gamma, self.config.gae_lambda)
        return ppo_update(self.agent, self.optimizer, rollout, self.settings)


def build_learner(policy: torch.nn.Module, config: RLConfig) -> Any:
    if config.algo == "r2ac":
        from fwp.rl.r2ac import R2ACLearner

        return R2ACLearner(policy, config)
    return PPOLearner(policy, config)


class RLTraining(Training):
    """One update per step of the core's loop; the validation is a seeded evaluation."""

    score, higher_is_better = "return", True
    instant = ("lr",)
    resume_hint = restart_hint = ""  # re-running the same command resumes
    damaged_fix = "delete it and re-run the same command to train the run from the start"
    diverged_fix = "lower --lr or --max-grad-norm, and train again into a new --out"

    def __init__(self, config: RLConfig, spec: EnvSpec) -> None:
        self.config, self.spec = config, spec
        self.model = build_policy(spec, config)
        self.learner = build_learner(self.model, config)
        self.optimizer = self.learner.optimizer
        self.updates = updates_of(config, spec)
        self.frames_per_update = frames_per_update(config, spec)
        self.envs: Any = None
        self.actor: Actor | None = None
        self.seconds = 0.0
        self.started = time.perf_counter()

    def prepare(self) -> None:
        self.envs = make_vector_env(self.spec, self.config.n_envs)
        self.started = time.perf_counter() - self.seconds

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()

    def train_step(self) -> dict[str, float]:
        """One rollout and its update; every environment restarts at a checkpoint's update."""
        config = self.config
        if self.actor is None or self.step % config.checkpoint_every == 0:
            self.actor = Actor(self.envs, self.spec, seed=_segment_seed(config.seed, self.step))
        lr = config.lr * (1.0 - self.step / self.updates) if config.anneal_lr else config.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        episodes = Episodes()
        tic, cpu = time.perf_counter(), time.process_time()
        stats = self.learner.update(self.actor, episodes)
        return {**_row(self.step + 1, self.frames_per_update, episodes, self.spec, stats,
                       time.perf_counter() - tic, time.process_time() - cpu), "lr": lr}

    def validate(self) -> dict[str, float]:
        result = run_episodes(self.model, self.spec, self.config.val_episodes,
                              self.config.eval_seed)
        return {"return": result["mean_return"], **_per_task(self.spec, result["per_task"])}

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": time.perf_counter() - self.started}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.seconds = checkpoint["seconds"]

    def train_line(self, values: dict[str, float]) -> str:
        return (f"frames {values.get('frames', 0):.0f}, return "
                f"{values.get('return', math.nan):.2f}, {values.get('fps', 0):.0f} frames/s")


def train(config: RLConfig, out: Path | None = None,
          log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Train ``config`` into run folder ``out`` (a temporary one without it) and evaluate the
    final agent; returns the evaluation (and writes it to ``out/eval.json``). Re-running the
    same config resumes, or returns the saved evaluation of a finished run."""
    config.validate()
    spec = check_env(config.env)  # a missing package or a bad space: one line, before any work
    if out is None:
        with tempfile.TemporaryDirectory(prefix="fwp-rl-") as folder:
            return _train(config, spec, RunFolder(folder), log, keep=False)
    return _train(config, spec, RunFolder(out), log, keep=True)


def _train(config: RLConfig, spec: EnvSpec, run: RunFolder,
           log: Callable[[str], None] | None, keep: bool) -> dict[str, Any]:
    say = log or (lambda _msg: None)
    with run.locked():
        if (result := run.finished(EVAL, config, say)) is not None:
            return result
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        training = RLTraining(config, spec)
        n_params = sum(p.numel() for p in training.model.parameters())
        say(f"{config.env} × {_label(config)}: {n_params} parameters, {training.updates} "
            f"updates of {training.frames_per_update} frames")
        try:
            summary = fit(training, run, steps=training.updates,
                          eval_every=config.checkpoint_every, log_every=1,
                          progress=log is not None, say=say)
        finally:
            training.close()
        if summary["status"] == "interrupted":
            raise RunStopped(f"{run.path}: stopped at update {summary['step']} with its "
                             f"checkpoint saved; the same command resumes it", summary["signal"])
        seconds = time.perf_counter() - training.started
        tic = time.perf_counter()
        result = run_episodes(training.model, spec, config.eval_episodes, config.eval_seed)
        result.update(train_seconds=round(seconds, 2), eval_seconds=round(
            time.perf_counter() - tic, 2), updates=training.step,
            frames=training.step * training.frames_per_update, parameters=n_params)
        if keep:
            write_atomic(run / EVAL, result)
    say(f"evaluation over {config.eval_episodes} seeded episodes: mean return "
        f"{result['mean_return']:.2f}")
    return result


def _label(config: RLConfig) -> str:
    net = config.network
    if config.algo == "r2ac":
        return f"R2AC {net.cell} ({net.gradient})"
    return f"PPO {net.layers} × {net.model}"


def _segment_seed(seed: int, update: int) -> int:
    return int(np.random.SeedSequence([seed, update]).generate_state(1)[0])


def _row(update: int, frames_per_update: int, episodes: Episodes, spec: EnvSpec,
         stats: dict[str, float], seconds: float, cpu_seconds: float) -> dict[str, Any]:
    """One metrics row; ``fps`` is frames per wall second, ``cpu_fps`` per second of this
    process's CPU time (what the run would reach alone on a core of this machine)."""
    row: dict[str, Any] = {"frames": update * frames_per_update,
                           "fps": frames_per_update / max(seconds, 1e-9),
                           "cpu_fps": frames_per_update / max(cpu_seconds, 1e-9),
                           **{k: round(v, 6) for k, v in stats.items()}}
    if episodes.returns:
        row["episodes"] = len(episodes.returns)
        row["return"] = float(np.mean([r for _, r in episodes.returns]))
        row["length"] = float(np.mean(episodes.lengths))
        row.update(_per_task(spec, {
            task: float(np.mean(rs)) for k, task in enumerate(spec.tasks)
            if (rs := [r for i, r in episodes.returns if i == k])
        }))
    return row


def _per_task(spec: EnvSpec, returns: dict[str, float]) -> dict[str, float]:
    """``return/TASK`` scalars of a multi-task run (the log holds flat scalars); ``{}`` for
    one task."""
    if len(spec.tasks) == 1:
        return {}
    return {f"return/{task}": value for task, value in returns.items()}
