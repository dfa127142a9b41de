"""Training and evaluation of one ``fwp rl`` run, with a resumable run folder.

``RUN/config.json`` (the resolved config), ``RUN/checkpoint.pt`` (agent, optimiser, update,
RNG state; rewritten atomically every ``checkpoint_every`` updates, loaded with
``weights_only=True``), ``RUN/metrics.jsonl`` (one row per update: frames, the returns of the
episodes finished, losses, frames per second) and, once finished, ``RUN/eval.json`` (seeded
evaluation episodes).

Exact resume: at every checkpoint every environment restarts (seeded by the run's seed and the
update) and the agent's state with it, in a run that stops there and in one that does not; the
checkpoint holds everything else that the rest of the run draws from. So a resumed run is the
same run, bit for bit on the same machine. The rollout before the restart still bootstraps its
last value, so the restart costs only the unfinished episodes' statistics.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fwp.config import read_file, to_dict, write_atomic
from fwp.errors import UserError, brief
from fwp.rl.agent import Agent
from fwp.rl.config import RLConfig, from_dict
from fwp.rl.envs import EnvSpec, check_env, make_vector_env
from fwp.rl.evaluate import run_episodes
from fwp.rl.ppo import Actor, Episodes, PPOSettings, gae, ppo_update

CONFIG, CHECKPOINT, METRICS, EVAL = "config.json", "checkpoint.pt", "metrics.jsonl", "eval.json"
# How long a run is and how it is executed: a re-run may change these; any other field would
# mix two runs in one folder.
EXTENDABLE = {"frames", "threads", "eval_episodes", "eval_seed"}


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


def updates_of(config: RLConfig, spec: EnvSpec) -> int:
    return math.ceil(config.frames / (config.n_envs * config.rollout * spec.frame_skip))


def check_folder(config: RLConfig, out: Path) -> list[str]:
    """Before any work: ``[]`` for a new run or the same run, else the extending changes;
    :class:`UserError` for a file named as the folder or any other change."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; choose another --out")
    if not (out / CONFIG).is_file() or not (out / CHECKPOINT).is_file():
        return []
    saved, now = read_file(out / CONFIG), to_dict(config)
    changed = [k for k in now if saved.get(k, now[k]) != now[k]]
    refused = [k for k in changed if k not in EXTENDABLE]
    if refused:
        raise UserError(f"{out} holds a run with another config (changed: {', '.join(refused)}); "
                        f"only {', '.join(sorted(EXTENDABLE))} may change on a re-run; choose "
                        f"another --out, or delete the folder to start over")
    return [f"{k} {saved[k]} → {now[k]}" for k in changed]


def load_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 — damaged or foreign: the same user problem
        raise UserError(f"cannot read {path} ({brief(error)}); delete it and re-run the same "
                        f"command to train the run from the start") from None
    if not isinstance(state, dict) or "agent" not in state:
        raise UserError(f"{path} is not a checkpoint of fwp rl; delete it and re-run")
    return state


def read_config(run: Path) -> RLConfig:
    if not (Path(run) / CONFIG).is_file():
        raise UserError(f"{run} is not a run folder of fwp rl (no {CONFIG}); train one first")
    return from_dict(read_file(Path(run) / CONFIG), str(Path(run) / CONFIG))


def load_policy(run: Path) -> tuple[RLConfig, EnvSpec, torch.nn.Module]:
    config = read_config(run)
    spec = check_env(config.env)
    policy = build_policy(spec, config)
    policy.load_state_dict(load_checkpoint(Path(run) / CHECKPOINT)["agent"])
    return config, spec, policy


def _append_row(path: Path | None, row: dict) -> None:
    if path is not None:
        with open(path, "a") as handle:
            handle.write(json.dumps(row) + "\n")


def _truncate_rows(path: Path, update: int) -> None:
    """Drop the rows logged after the checkpoint (a stop between a row and the next save)."""
    if path.is_file():
        rows = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["update"] <= update]
        write_atomic(path, "".join(row + "\n" for row in rows))


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


def train(config: RLConfig, out: Path | None = None,
          log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Train ``config`` (into run folder ``out`` if given); returns the final metrics."""
    config.validate()
    log = log or (lambda _msg: None)
    spec = check_env(config.env)  # a missing package or a bad space: one line, before any work
    extended = check_folder(config, Path(out)) if out is not None else []
    out = Path(out) if out is not None else None
    if out is not None and (out / EVAL).is_file() and not extended:
        log(f"{out}: already finished")
        return read_file(out / EVAL)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    policy = build_policy(spec, config)
    learner = build_learner(policy, config)
    total = updates_of(config, spec)
    update, seconds = 0, 0.0
    if out is not None and (out / CHECKPOINT).is_file():
        state = load_checkpoint(out / CHECKPOINT)
        policy.load_state_dict(state["agent"])
        learner.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        update, seconds = int(state["update"]), float(state["seconds"])
        log(f"{out}: resuming at update {update}" + (f" ({'; '.join(extended)})"
                                                      if extended else ""))
        _truncate_rows(out / METRICS, update)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / CONFIG, to_dict(config))
        (out / EVAL).unlink(missing_ok=True)
    frames_per_update = config.n_envs * config.rollout * spec.frame_skip
    n_params = sum(p.numel() for p in policy.parameters())
    log(f"{config.env} × {_label(config)}: {n_params} parameters, {total} updates of "
        f"{frames_per_update} frames")
    envs = make_vector_env(spec, config.n_envs)
    actor, start = None, time.perf_counter() - seconds
    while update < total:
        if actor is None or update % config.checkpoint_every == 0:
            actor = Actor(envs, spec, seed=_segment_seed(config.seed, update))
        if config.anneal_lr:
            for group in learner.optimizer.param_groups:
                group["lr"] = config.lr * (1.0 - update / total)
        episodes = Episodes()
        tic, cpu = time.perf_counter(), time.process_time()
        stats = learner.update(actor, episodes)
        update += 1
        row = _row(update, frames_per_update, episodes, spec, stats, time.perf_counter() - tic,
                   time.process_time() - cpu)
        _append_row(out / METRICS if out is not None else None, row)
        if update % 10 == 0 or update == total:
            log(f"update {update}/{total}: frames {row['frames']}, return "
                f"{row.get('return', float('nan')):.2f}, {row['fps']:.0f} frames/s")
        if out is not None and (update % config.checkpoint_every == 0 or update == total):
            write_atomic(out / CHECKPOINT, {
                "agent": policy.state_dict(), "optimizer": learner.optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(), "update": update,
                "seconds": time.perf_counter() - start})
    envs.close()
    result = run_episodes(policy, spec, config.eval_episodes, config.eval_seed)
    result.update(train_seconds=round(time.perf_counter() - start, 2), updates=update,
                  frames=update * frames_per_update, parameters=n_params)
    if out is not None:
        write_atomic(out / EVAL, result)
    log(f"evaluation over {config.eval_episodes} seeded episodes: mean return "
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
    row: dict[str, Any] = {"update": update, "frames": update * frames_per_update,
                           "fps": frames_per_update / max(seconds, 1e-9),
                           "cpu_fps": frames_per_update / max(cpu_seconds, 1e-9),
                           **{k: round(v, 6) for k, v in stats.items()}}
    if episodes.returns:
        row["episodes"] = len(episodes.returns)
        row["return"] = float(np.mean([r for _, r in episodes.returns]))
        row["length"] = float(np.mean(episodes.lengths))
        if len(spec.tasks) > 1:
            row["per_task"] = {
                task: float(np.mean(rs)) for k, task in enumerate(spec.tasks)
                if (rs := [r for i, r in episodes.returns if i == k])
            }
    return row
