"""Training of a sequential few-shot learner with the bootstrapped loss (seed paper Eq. 5): its
step and its validation, trained by the run core's loop (:mod:`fwp.runs`).

One process, or one per device under ``torchrun`` (DistributedDataParallel; gloo on CPU, NCCL
on GPU). Episodes form one global stream: at each micro-batch the world takes the next
``batch_size · world_size`` episodes and rank r the r-th block of them, so every rank sees its
own episodes and the stream does not depend on how many processes share it. With
``--data-workers W`` the micro-batches are made ahead by W processes (pinned on CUDA); a batch
depends only on its episode indices, so the run is the same bit for bit.
"""

from __future__ import annotations

import math
import random
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from fwp.data import Prefetcher
from fwp.errors import UserError
from fwp.fewshot.budget import gpu_notice
from fwp.fewshot.config import RunConfig
from fwp.fewshot.evaluate import VAL_SEED, autocast
from fwp.fewshot.model import FewShotLearner
from fwp.fewshot.protocols import build_task
from fwp.fewshot.protocols.episodic import check_test_split, episode_loss
from fwp.runs import RunFolder, Training, TrainingDiverged, World, fit, setup_world

__all__ = ["FewShotTraining", "TrainingDiverged", "episode_loss", "lr_factor", "train"]


def lr_factor(config: RunConfig, step: int) -> float:
    """Multiplier of ``optim.lr`` at optimiser step ``step`` (0-based; s = step + 1).

    noam:   d_model^−½ · min(s^−½, s · w^−1.5)   (Vaswani et al. 2017; the public SRWM code)
    cosine: s / w during warm-up, then ½(1 + cos(π · progress)) down to 0 at ``steps``
    """
    s, w = step + 1, config.optim.warmup
    schedule = config.optim.schedule
    if schedule == "noam":
        return config.network.d_model ** -0.5 * min(s ** -0.5, s * w ** -1.5)
    if schedule == "cosine":
        if s <= w:
            return s / w
        progress = (s - w) / max(1, config.steps - w)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def episodes_per_step(config: RunConfig, processes: int) -> str:
    """Under torchrun, what ``--batch-size`` means: episodes per micro-batch and process, so an
    optimiser step averages ``batch_size · accumulate · processes`` of them (the public scripts
    train on one GPU: 16 per step). Announced, since more processes silently mean a larger
    batch; "" in one process."""
    optim = config.optim
    if processes == 1:
        return ""
    total = optim.batch_size * optim.accumulate * processes
    keep = (f"; for {optim.batch_size * optim.accumulate} per step as in one process, give "
            f"--batch-size {optim.batch_size // processes}"
            if optim.batch_size % processes == 0 and optim.batch_size >= processes else "")
    return (f"fwp: {processes} processes × --batch-size {optim.batch_size} × --accumulate "
            f"{optim.accumulate} = {total} episodes per optimiser step{keep}")


class FewShotTraining(Training):
    """The learner, its optimiser and schedule, and the training and validation tasks (the
    run's protocol: episodes or streams); ``net`` is ``model`` or its DDP wrapper."""

    score, higher_is_better = "accuracy", True
    diverged_fix = "Lower --lr, raise --warmup or set --grad-clip, then resume or start again"

    def __init__(self, config: RunConfig, world: World, announce: bool) -> None:
        self.config, self.world = config, world
        self.prefetcher: Prefetcher | None = None
        if config.protocol.protocol != "episodic" and world.size > 1:
            raise UserError(f"--protocol {config.protocol.protocol} trains in one process; "
                            "start it without torchrun")
        self.task = build_task(config, "train", config.seed, training=True)
        self.val_task = build_task(config, config.data.val_split, VAL_SEED)
        self.task.check(training=True)
        self.val_task.check(training=False)
        if config.protocol.protocol == "episodic":
            check_test_split(config)
        self.model = FewShotLearner(config, self.task.image_shape)
        if announce:
            notice = gpu_notice(config, self.task.image_shape, self.model)
            for line in (notice, episodes_per_step(config, world.size)):
                if line:
                    print(line, flush=True)
        self.model = self.net = self.model.to(world.device)
        optim = config.optim
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=optim.lr, betas=(optim.adam_beta1, optim.adam_beta2),
            eps=optim.adam_eps, weight_decay=optim.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(config, s))

    def prepare(self) -> None:
        """Wrap the model in DDP (several processes); start the data workers at the restored
        position of the episode stream (this rank's block of each micro-batch)."""
        world, optim = self.world, self.config.optim
        if world.size > 1:
            self.net = DistributedDataParallel(
                self.model, device_ids=[world.device.index] if world.device.type == "cuda"
                else None)
        if self.config.data_workers:
            self.prefetcher = Prefetcher(
                self.task.sampler, optim.batch_size,
                start=self.task.sampler.next_episode + world.rank * optim.batch_size,
                stride=world.size * optim.batch_size, workers=self.config.data_workers,
                prefetch=self.config.prefetch, pin_memory=world.device.type == "cuda")

    def close(self) -> None:
        """End the data workers, if any."""
        if self.prefetcher:
            self.prefetcher.close()
            self.prefetcher = None

    def train_step(self) -> dict[str, float]:
        """Eq. 5 (or the stream protocol's loss) over ``accumulate`` micro-batches of this rank's
        next episodes (DDP averages the gradients across ranks on the last one), clipped."""
        config, optim, world = self.config, self.config.optim, self.world
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {"loss": 0.0, "accuracy": 0.0}
        for micro in range(optim.accumulate):
            episode = self.next_batch()
            sync = micro == optim.accumulate - 1 or world.size == 1
            with nullcontext() if sync else self.net.no_sync():
                with autocast(world.device, config.amp):
                    net = self.net if config.protocol.protocol == "episodic" else self.model
                    loss, parts, accuracy = self.task.loss(net, episode)
                (loss / optim.accumulate).backward()
            sums["loss"] += loss.item() / optim.accumulate
            sums["accuracy"] += 100 * accuracy / optim.accumulate
            for key, value in parts.items():
                sums[f"loss_{key}"] = sums.get(f"loss_{key}", 0.0) + value.item() / optim.accumulate
        clip = optim.grad_clip if optim.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        if math.isfinite(sums["loss"]) and math.isfinite(grad_norm):  # else the loop stops
            self.optimizer.step()
            self.scheduler.step()
        return {**sums, "lr": self.scheduler.get_last_lr()[0], "grad_norm": grad_norm}

    def next_batch(self) -> Any:
        """This rank's next micro-batch of episodes or streams, on the device: made now, or
        taken from the data workers (``--data-workers``); the sampler's counter moves past the
        world's micro-batch either way."""
        sampler, world, size = self.task.sampler, self.world, self.config.optim.batch_size
        first = sampler.next_episode + world.rank * size
        batch = (self.prefetcher.next(first) if self.prefetcher else
                 sampler.batch(range(first, first + size)))
        sampler.next_episode += world.size * size
        return batch.to(world.device, non_blocking=True)

    def validate(self) -> dict[str, float]:
        """Accuracy on fixed validation episodes (rank 0) or streams."""
        if self.config.protocol.protocol == "episodic" and not self.world.main:
            return {}
        result = self.val_task.evaluate(self.model, self.config.val_episodes,
                                        amp=self.config.amp)
        return {key: result[key] for key in ("accuracy", "ci95", "loss")}

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.task.sampler.state_dict()}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.task.sampler.load_state_dict(checkpoint["sampler"])

    def info(self) -> dict[str, Any]:
        return {"image_shape": list(self.task.image_shape)}

    def resumed(self, saved_config: dict[str, Any]) -> list[str]:
        """Give the restored optimiser and schedule the config's rate, schedule and Adam
        settings, so that the run does what config.json says; the change of the next step's
        learning rate, if any."""
        config, optim, scheduler = self.config, self.config.optim, self.scheduler
        groups = self.optimizer.param_groups
        before = groups[0]["lr"]
        scheduler.base_lrs = [optim.lr] * len(groups)
        for group in groups:
            group.update(initial_lr=optim.lr, betas=(optim.adam_beta1, optim.adam_beta2),
                         eps=optim.adam_eps, weight_decay=optim.weight_decay,
                         lr=optim.lr * lr_factor(config, scheduler.last_epoch))
        scheduler._last_lr = [group["lr"] for group in groups]  # what get_last_lr reports
        if before == groups[0]["lr"]:
            return []
        return [f"learning rate of step {self.step + 1}: {before:.3g} → {groups[0]['lr']:.3g} "
                f"(the {optim.schedule} schedule of --lr {optim.lr:g} over --steps "
                f"{config.steps}, as a run started with them would have)"]

    def train_line(self, values: dict[str, float]) -> str:
        return f"train loss {values['loss']:.3f}, accuracy {values['accuracy']:.1f} %"

    def validation_line(self, values: dict[str, float], best: dict[str, Any]) -> str:
        return (f"val accuracy {values['accuracy']:.2f} ± {values['ci95']:.2f} "
                f"(best {best['accuracy']:.2f} at {best['step']})")


def train(
    config: RunConfig,
    run: str | Path,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) the run in folder ``run``.

    Returns ``{"status": finished | stopped | interrupted, "step", "best": {accuracy, step,
    ...}, "model"}`` (the trained module, unwrapped from DDP).

    ``stop_after``: stop (and save) once this many optimiser steps are done, as if interrupted
    there — the schedule still runs to ``config.steps``.
    """
    config.validate()
    folder = RunFolder(run)
    world = setup_world(config.device)
    with folder.locked(hold=world.main):
        folder.check_resume(resume)
        if config.threads:
            torch.set_num_threads(config.threads)
        random.seed(config.seed)
        np.random.seed(config.seed)  # noqa: NPY002
        torch.manual_seed(config.seed)
        training = FewShotTraining(config, world, announce=world.main and not resume
                                   and world.device.type == "cpu")
        try:
            summary = fit(training, folder, steps=config.steps, eval_every=config.eval_every,
                          log_every=config.log_every, resume=resume, stop_after=stop_after,
                          world=world, progress=progress,
                          say=lambda line: print(line, flush=True))
        finally:
            training.close()
    return {**summary, "model": training.model}
