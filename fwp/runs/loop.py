"""The generic training loop: a workflow's :class:`Training` driven step by step, with
validation, ``best.pt``, checkpoints, resume, the NaN stop, SIGINT / SIGTERM and the metrics log.

The loop knows nothing of episodes, tokens or environments: the workflow's ``train_step`` makes
one optimiser step and returns its scalars, ``validate`` returns the validation's scalars (one
of them, ``score``, chooses ``best.pt``), and ``state_dict`` / ``load_state_dict`` carry what
else a resumed run needs (a sampler's position, a carried state, an environment).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from fwp import environment
from fwp.config import WriteFailed, to_dict
from fwp.errors import UserError
from fwp.runs.checkpoint import load_checkpoint, save_checkpoint
from fwp.runs.folder import RunFolder
from fwp.runs.metrics import MetricsLog
from fwp.runs.policy import resume_changes
from fwp.runs.rng import rng_state, set_rng_state
from fwp.runs.signals import StopRequest
from fwp.runs.world import World

# Keys of checkpoint.pt that the loop writes; a workflow's own state goes beside them.
CORE_KEYS = ("model", "optimizer", "scheduler", "rng", "step", "best", "config", "runtime")


class TrainingDiverged(UserError):
    """The loss or the gradient became NaN/Inf; nothing was saved after the last good step."""


class Training:
    """What a workflow gives :func:`fit`. Set ``config``, ``model``, ``optimizer`` (and
    ``scheduler``) in ``__init__``; override :meth:`train_step` and :meth:`validate`, and the
    other methods where the defaults do not fit. ``step`` is kept by the loop (steps done)."""

    config: Any  # the run's config: a dataclass schema of fwp.config
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any = None  # anything with state_dict / load_state_dict, or None
    score: str = "loss"  # the validation value that chooses best.pt
    higher_is_better: bool = False
    tiebreak: str | None = None  # on an equal score, the lower of this value wins
    instant: tuple[str, ...] = ("lr", "grad_norm")  # logged as the last step's, not the mean
    resume_hint: str = " with --resume"  # how the user continues a stopped run
    restart_hint: str = " without --resume"  # how the user starts it again
    damaged_fix: str = "restore it, or train the run again into a new --out"
    diverged_fix: str = "lower --lr or set --grad-clip, then resume or start again"
    step: int = 0

    def train_step(self) -> dict[str, float]:
        """One optimiser step; returns its scalars (``loss`` at least)."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """The validation's scalars, ``score`` among them (rank 0; others may return ``{}``)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """What else checkpoint.pt holds (plain types): sampler, data position, carried state."""
        return {}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s keys from the whole checkpoint dict."""

    def info(self) -> dict[str, Any]:
        """What loading the model needs besides its config, saved in checkpoint.pt and best.pt
        (e.g. the input shape)."""
        return {}

    def resumed(self, saved_config: dict[str, Any]) -> list[str]:
        """Called once the checkpoint is restored: apply what the config changed (e.g. the
        optimiser's rate) and return what to announce."""
        return []

    def prepare(self) -> None:
        """Called once the state is restored and config.json written, before the first step
        (e.g. wrap the model in DistributedDataParallel)."""

    def should_stop(self) -> bool:
        """After a validation: whether training ends early (e.g. a perfect score)."""
        return False

    def train_line(self, values: dict[str, float]) -> str:
        return f"train loss {values.get('loss', math.nan):.4f}"

    def validation_line(self, values: dict[str, float], best: dict[str, Any]) -> str:
        best_score = best.get(self.score, math.nan)
        return (f"val {self.score} {values[self.score]:.4g} (best {best_score:.4g} at "
                f"{best['step']})")

    def better(self, values: dict[str, float], best: dict[str, Any]) -> bool:
        """Whether ``values`` beat ``best`` (the best validation so far, or ``{"step": 0}``)."""
        if self.score not in best:
            return True
        sign = 1.0 if self.higher_is_better else -1.0
        new, old = sign * values[self.score], sign * best[self.score]
        if new != old or self.tiebreak is None:
            return new > old
        return values[self.tiebreak] < best[self.tiebreak]


def fit(
    training: Training,
    folder: RunFolder,
    *,
    steps: int,
    eval_every: int,
    log_every: int = 10,
    resume: bool | None = None,
    stop_after: int | None = None,
    world: World | None = None,
    progress: bool = True,
    tensorboard: bool = True,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``training`` in ``folder`` (held locked by the caller) to ``steps`` optimiser steps.

    ``resume``: continue from ``folder``'s checkpoint (None: when it has one). Its config's
    changes are checked against the resume policy of each field, then config.json is written.
    ``stop_after``: stop (and save) after this many steps, as if interrupted there.

    Returns ``{"status": finished | stopped | interrupted, "step", "best", "runtime",
    "signal"}``; ``finished`` also when :meth:`Training.should_stop` ended it early, ``signal``
    the signal number that interrupted it (else None).
    """
    world = world or World()
    if resume is None:
        resume = folder.has_checkpoint()
    runtime = environment.runtime(world.device)  # compiles the CPU kernels now if not cached
    if world.main:
        say(f"fwp: {environment.describe(runtime)}")
    best: dict[str, Any] = {"step": 0}
    legacy_best = None
    if resume:
        best, legacy_best = _restore(training, folder, steps, runtime, world, say)
    if world.main:  # every check has passed: only now is anything written
        folder.claim(to_dict(training.config), fresh=not resume)
        if legacy_best is not None:
            _save_best(training, folder, best, legacy_best)
    world.barrier()
    training.prepare()
    loop = _Loop(training, folder, world, runtime, best, steps, eval_every, say)
    last_step = min(steps, stop_after if stop_after is not None else steps)
    log = MetricsLog(folder.path, step=training.step, total=steps, log_every=log_every,
                     enabled=world.main, progress=progress, tensorboard=tensorboard, say=say)
    log.record(training.step, "runtime", runtime)
    try:
        status = loop.run(log, last_step, saved_at=training.step if resume else -1)
    finally:
        log.close()
    world.barrier()  # no rank leaves (and closes its connections) while another still saves
    return {"status": status, "step": training.step, "best": loop.best, "runtime": runtime,
            "signal": loop.signum}


def _restore(training: Training, folder: RunFolder, steps: int, runtime: dict, world: World,
             say: Callable[[str], None]) -> tuple[dict, dict | None]:
    """Load ``folder``'s checkpoint into ``training`` after the resume checks; returns the best
    validation so far and, from a checkpoint of an older version that held it, the best model."""
    path = folder.checkpoint
    checkpoint = load_checkpoint(path, fix=training.damaged_fix)
    saved = checkpoint.get("config") or folder.read_config()
    changed = resume_changes(type(training.config), saved, to_dict(training.config), str(path))
    if checkpoint["step"] > steps:
        raise UserError(f"{folder.path} is at step {checkpoint['step']}, past the {steps} steps "
                        f"of this config; train to {checkpoint['step']} steps or more (or leave "
                        f"the length as it was)")
    try:
        training.model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        first = " ".join(line.strip() for line in str(error).strip().splitlines()[:3])
        raise UserError(f"checkpoint {path} does not match the model of its config: {first}"
                        ) from None
    training.optimizer.load_state_dict(checkpoint["optimizer"])
    if training.scheduler is not None and checkpoint.get("scheduler") is not None:
        training.scheduler.load_state_dict(checkpoint["scheduler"])
    if "rng" in checkpoint:
        set_rng_state(checkpoint["rng"][world.rank % len(checkpoint["rng"])])
    training.load_state_dict(checkpoint)
    training.step = checkpoint["step"]
    best = dict(checkpoint.get("best") or {"step": 0})
    legacy_best = best.pop("model", None)  # fwp formal kept its best model in checkpoint.pt
    changed += training.resumed(saved)
    moved = environment.changes(checkpoint.get("runtime"), runtime)
    changed = [c for c in changed if c not in moved]  # e.g. threads: said once, below
    if world.main:
        say(f"{folder.path}: resuming at step {training.step}")
        if changed:
            say(f"fwp: changed on resume: {'; '.join(changed)}")
        if moved:
            say(f"fwp: changed on resume: {'; '.join(moved)} (the run goes on, but is no longer "
                f"bit-identical to one that ran without stopping)")
    return best, legacy_best


def _save_best(training: Training, folder: RunFolder, best: dict, model: Any) -> None:
    save_checkpoint(folder.best, {"model": model, "step": best["step"], "best": best,
                                  "config": to_dict(training.config), **training.info()})


class _Loop:
    """The steps of one :func:`fit` call."""

    def __init__(self, training: Training, folder: RunFolder, world: World, runtime: dict,
                 best: dict, steps: int, eval_every: int, say: Callable[[str], None]) -> None:
        self.training, self.folder, self.world = training, folder, world
        self.runtime, self.best, self.steps, self.eval_every = runtime, best, steps, eval_every
        self.say = say
        self.signum: int | None = None

    def run(self, log: MetricsLog, last_step: int, saved_at: int) -> str:
        """Step to ``last_step``; save at every validation and when stopping."""
        training = self.training
        status = "finished"
        if training.should_stop():  # a run resumed after it had ended early: nothing to do
            return status
        training.model.train()
        try:
            with StopRequest(self.say) as stop:
                while training.step < last_step:
                    values = training.train_step()
                    stop_now = self._check(values, stop.asked())
                    training.step += 1
                    log.step(training.step, values, last_step)
                    early = False
                    if training.step % self.eval_every == 0 or training.step == self.steps:
                        early = self.validate(log)
                        saved_at = training.step
                    if stop_now or early:
                        status = "interrupted" if stop_now else "finished"
                        break
                else:
                    status = "finished" if training.step >= self.steps else "stopped"
                if saved_at != training.step:
                    self.save()
                self.signum = stop.signum
        except WriteFailed as error:
            kept = (f"{training.resume_hint} (the checkpoint of step {saved_at} is intact)"
                    if saved_at >= 0 else f"{training.restart_hint} (no checkpoint was written "
                    f"yet)")
            raise WriteFailed(f"{error}{kept}") from None
        return status

    def _check(self, values: dict[str, float], stop_requested: bool) -> bool:
        """Raise :class:`TrainingDiverged` if a value is not finite on any rank; whether any
        rank asked to stop."""
        diverged, stop = self.world.any(
            not all(math.isfinite(v) for v in values.values()), stop_requested)
        if diverged:
            path = self.folder.checkpoint
            shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
            kept = (f"the last good checkpoint {path} is kept" if path.is_file()
                    else "no checkpoint was written yet")
            raise TrainingDiverged(
                f"training loss became {values.get('loss', math.nan)} at step "
                f"{self.training.step + 1} ({shown}); training stopped and {kept}. "
                f"{self.training.diverged_fix}"
            )
        return stop

    def validate(self, log: MetricsLog) -> bool:
        """Validate, keep ``best.pt`` when the score improved, save the checkpoint; whether
        training ends early."""
        training = self.training
        values = training.validate()
        if self.world.main:
            if training.better(values, self.best):
                self.best = {"step": training.step, **values}
                _save_best(training, self.folder, self.best, training.model.state_dict())
            log.validation(training.step, values, training.validation_line(values, self.best),
                           training.train_line)
        self.best = self.world.gather(self.best)[0]
        self.save()
        return training.should_stop()

    def save(self) -> None:
        """``checkpoint.pt``: everything :func:`_restore` needs (every rank's RNG)."""
        training = self.training
        rng = self.world.gather(rng_state())
        if not self.world.main:
            return
        scheduler = training.scheduler.state_dict() if training.scheduler is not None else None
        save_checkpoint(self.folder.checkpoint, {
            "model": training.model.state_dict(), "optimizer": training.optimizer.state_dict(),
            "scheduler": scheduler, "rng": rng, "step": training.step, "best": self.best,
            "config": to_dict(training.config), "runtime": self.runtime,
            **training.state_dict(), **training.info(),
        })
