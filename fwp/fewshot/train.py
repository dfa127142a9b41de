"""Training of a sequential few-shot learner with the bootstrapped loss (seed paper Eq. 5).

One process, or one per device under ``torchrun`` (DistributedDataParallel; gloo on CPU, NCCL
on GPU). Episodes form one global stream: at each micro-batch the world takes the next
``batch_size · world_size`` episodes and rank r the r-th block of them, so every rank sees its
own episodes and the stream does not depend on how many processes share it.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import sys
import time
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel

from fwp import environment
from fwp.config import WriteFailed, to_dict, write_atomic, write_failure
from fwp.data import Episode, EpisodeSampler, FewShotDataset
from fwp.data.streams import StreamSampler
from fwp.errors import UserError
from fwp.fewshot.budget import gpu_notice
from fwp.fewshot.checkpoint import (
    BEST,
    CHECKPOINT,
    CONFIG,
    METRICS,
    load_checkpoint,
    load_state,
)
from fwp.fewshot.config import LossConfig, RunConfig
from fwp.fewshot.evaluate import VAL_SEED, autocast, evaluate, load_split
from fwp.fewshot.losses import bootstrap_loss
from fwp.fewshot.model import FewShotLearner
from fwp.fewshot.protocols import StreamTask, build_task
from fwp.fewshot.resume import check_changes


class TrainingDiverged(UserError):
    """The loss or the gradient became NaN/Inf; nothing was saved after the last good step."""


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


@dataclass
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_world(config: RunConfig) -> World:
    """Join the process group when started by torchrun (WORLD_SIZE > 1), pick the device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if config.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda, but torch sees no CUDA device; use --device cpu")
        if size > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(rank, size, device)


def _rng_state() -> dict:
    # The global numpy / Python generators are saved too: user data code may draw from them.
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),  # noqa: NPY002
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather(world: World, obj: Any) -> list[Any]:
    if world.size == 1:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


class _StopRequest:
    """First Ctrl-C (SIGINT): finish the current step, save, stop. A second one: stop now."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopRequest:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C as it is
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nfwp: stopping after this step and saving a checkpoint (Ctrl-C again to abort)",
              flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the rows of ``path`` up to ``step`` (the checkpoint's): rows logged after the last
    save, before a kill, would be logged again by the resumed run. A torn last line goes too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("step", step + 1) <= step:
            kept.append(line + "\n")
    write_atomic(path, "".join(kept))


class MetricsLog:
    """metrics.jsonl (always) and TensorBoard (when installed), written by rank 0 only, and the
    progress: a bar on a terminal; elsewhere (a log file, or ``--no-progress``) one plain line
    per validation. Training values are means over the steps since the last log line. Both
    files continue from the trainer's step, dropping what was logged after it."""

    def __init__(self, trainer: Trainer, progress: bool) -> None:
        self.enabled = trainer.world.main
        self.log_every = trainer.config.log_every
        self.total = trainer.config.steps
        self.writer = self.bar = None
        self.path = trainer.run / METRICS
        self.last_train: dict[str, float] = {}
        self._reset()
        if not self.enabled:
            return
        step = trainer.step
        truncate_metrics(trainer.run / METRICS, step)
        self.file = (trainer.run / METRICS).open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(trainer.run / "tb"),
                                        purge_step=step + 1 if step else None)
        except ImportError:
            self.writer = None
        if progress and sys.stderr.isatty():  # a bar in a log file is a line of \r updates
            from tqdm import tqdm

            self.bar = tqdm(total=trainer.config.steps, initial=trainer.step,
                            desc=trainer.run.name, dynamic_ncols=True, unit="step")

    def _reset(self) -> None:
        self.window = {"loss": 0.0, "accuracy": 0.0, "n": 0, "time": time.perf_counter()}

    def step(self, step: int, result: StepResult, lr: float, last_step: int) -> None:
        """Count optimiser step ``step``; write the window's means every ``log_every`` steps."""
        window = self.window
        window["loss"] += result.loss
        window["accuracy"] += result.accuracy
        window["n"] += 1
        if self.bar is not None:
            self.bar.update(1)
        if step % self.log_every and step != last_step:
            return
        elapsed = time.perf_counter() - window["time"]
        values = {
            "loss": window["loss"] / window["n"],
            "accuracy": 100 * window["accuracy"] / window["n"],
            "lr": lr,
            "grad_norm": result.grad_norm,
            "steps_per_s": window["n"] / max(elapsed, 1e-9),
            **{f"loss_{k}": v for k, v in result.parts.items()},
        }
        self.log(step, "train", values)
        self.last_train = values
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{values['loss']:.3f}", acc=f"{values['accuracy']:.1f}",
                                 steps_s=f"{values['steps_per_s']:.2f}")
        self._reset()

    def validation(self, step: int, values: dict[str, float], best: dict) -> None:
        self.log(step, "val", values)
        if not self.enabled:
            return
        line = (f"val accuracy {values['accuracy']:.2f} ± {values['ci95']:.2f} "
                f"(best {best['accuracy']:.2f} at {best['step']})")
        if self.bar is not None:
            self.bar.write(f"step {step}: {line}")
            return
        window, train = self.window, self.last_train
        if window["n"]:  # the steps since the last log line (none: that line has them)
            elapsed = time.perf_counter() - window["time"]
            train = {"loss": window["loss"] / window["n"],
                     "accuracy": 100 * window["accuracy"] / window["n"],
                     "steps_per_s": window["n"] / max(elapsed, 1e-9)}
        print(f"step {step}/{self.total}: train loss {train['loss']:.3f}, accuracy "
              f"{train['accuracy']:.1f} %, {train['steps_per_s']:.2f} steps/s; {line}",
              flush=True)

    def _write(self, row: dict[str, Any]) -> None:
        try:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
        except OSError as error:
            raise WriteFailed(write_failure(self.path, error)) from None

    def record(self, step: int, kind: str, info: dict[str, Any]) -> None:
        """A row that is not a scalar series (``kind`` "runtime": threads, operators ...)."""
        if self.enabled:
            self._write({"step": step, "split": kind, **info})

    def log(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._write({"step": step, "split": split, **values})
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.enabled:
            with suppress(OSError):  # a full disk was reported where it happened
                self.file.close()
            if self.writer is not None:
                self.writer.close()


def check_run_folder(run: Path, resume: bool) -> None:
    """Whether ``run`` can hold this run: a folder (or nothing yet), with a checkpoint exactly
    when resuming. Reads only."""
    if run.exists() and not run.is_dir():
        raise UserError(f"--out {run} is a file, not a folder; choose another --out")
    has_checkpoint = (run / CHECKPOINT).is_file()
    if resume and not has_checkpoint:
        stopped = (" (its run stopped before the first checkpoint: start it again without "
                   "--resume)" if (run / CONFIG).is_file() else "")
        raise UserError(f"cannot resume: {run / CHECKPOINT} does not exist{stopped}")
    if not resume and has_checkpoint:
        raise UserError(
            f"{run} already holds a run; pass --resume to continue it, or choose another --out"
        )


def check_splits(config: RunConfig, train_set: FewShotDataset, val_set: FewShotDataset) -> None:
    """Every episode the run will draw fits its split, checked before the first step: training
    (by the sampler), validation (K shots + 1 query per class) and, when the data set has one,
    the test split that ``fwp fewshot eval`` reads."""
    n, k = config.data.n_way, config.data.k_shot
    train_set.check_episode(n, k + config.data.k_extra * config.bootstrapped + config.data.n_query)
    val_set.check_episode(n, k + 1)
    if config.data.val_split != "test":
        try:
            test_set = load_split(config, "test")
        except UserError:
            return  # no test split here (a folder with train/ and val/ only): nothing to check
        test_set.check_episode(n, k + 1)


def prepare_run(config: RunConfig, run: Path, resume: bool) -> None:
    """Create the run folder and write the resolved config, once every check has passed. A new
    run first clears what a run that never reached its first checkpoint left in the folder."""
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the run folder {run} ({error.strerror or error}); "
                        f"choose another --out") from None
    if not resume:
        for leftover in (METRICS, BEST):
            (run / leftover).unlink(missing_ok=True)
        shutil.rmtree(run / "tb", ignore_errors=True)
    write_atomic(run / CONFIG, to_dict(config))


@dataclass
class Trainer:
    """Everything a training step reads or changes; ``net`` is ``model`` or its DDP wrapper."""

    config: RunConfig
    run: Path
    world: World
    train_set: FewShotDataset
    val_set: FewShotDataset | None
    sampler: EpisodeSampler | StreamSampler
    model: FewShotLearner
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    runtime: dict[str, Any]
    step: int = 0
    best: dict = field(default_factory=lambda: {"accuracy": -1.0, "step": 0})
    # --protocol delayed / sequential / continual: streams instead of episodes
    task: StreamTask | None = None
    val_task: StreamTask | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.task.image_shape if self.task else self.train_set.image_shape

    @property
    def k_extra(self) -> int:
        """K′ of the training episodes: 0 unless bootstrapping needs the extra examples."""
        return self.config.data.k_extra if self.config.bootstrapped else 0


@dataclass
class StepResult:
    """One optimiser step's loss, query accuracy and loss terms (means over the micro-batches),
    and the gradient norm before clipping."""

    loss: float
    accuracy: float
    parts: dict[str, float]
    grad_norm: float


def start(config: RunConfig, run: Path, resume: bool) -> Trainer:
    """The runtime (processes, threads, seeds), the run folder, data, model and optimiser;
    with ``resume``, their state from the run's checkpoint."""
    config.validate()
    check_run_folder(run, resume)
    world = setup_world(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    runtime = environment.runtime(world.device)  # compiles the CPU kernels now if not cached
    if world.main:
        print(f"fwp: {environment.describe(runtime)}", flush=True)
    random.seed(config.seed)
    np.random.seed(config.seed)  # noqa: NPY002
    torch.manual_seed(config.seed)
    task = val_task = None
    if config.protocol.protocol != "episodic":
        if world.size > 1:
            raise UserError(f"--protocol {config.protocol.protocol} trains in one process; "
                            "start it without torchrun")
        task = build_task(config, "train", config.seed, training=True)
        val_task = build_task(config, config.data.val_split, VAL_SEED)
    train_set = task.sampler.domains[0] if task else load_split(config, "train")
    val_set = None if task else load_split(config, config.data.val_split)
    if task is None:
        check_splits(config, train_set, val_set)
    sampler = task.sampler if task else EpisodeSampler(
        train_set, config.data.n_way, config.data.k_shot, n_query=config.data.n_query,
        k_extra=config.data.k_extra if config.bootstrapped else 0, seed=config.seed,
    )
    image_shape = task.image_shape if task else train_set.image_shape
    model = FewShotLearner(config, image_shape)
    if world.main and world.device.type == "cpu" and not resume:
        notice = gpu_notice(config, image_shape, model)
        if notice:
            print(notice, flush=True)
    model = model.to(world.device)
    optim = config.optim
    optimizer = torch.optim.Adam(
        model.parameters(), lr=optim.lr, betas=(optim.adam_beta1, optim.adam_beta2),
        eps=optim.adam_eps, weight_decay=optim.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(config, s))
    trainer = Trainer(config, run, world, train_set, val_set, sampler, model, model, optimizer,
                      scheduler, runtime, task=task, val_task=val_task)
    if resume:
        load_training_state(trainer)
    if world.main:  # every check has passed: only now is anything written
        prepare_run(config, run, resume)
    if world.size > 1:
        dist.barrier()
        trainer.net = DistributedDataParallel(
            model, device_ids=[world.device.index] if world.device.type == "cuda" else None
        )
    return trainer


def load_training_state(trainer: Trainer) -> None:
    """Continue exactly where the run's checkpoint stopped (this rank's RNG state included)."""
    path, config = trainer.run / CHECKPOINT, trainer.config
    checkpoint = load_checkpoint(path)
    saved = checkpoint.get("config", {})
    changed = check_changes(saved, to_dict(config), path)
    if checkpoint["step"] > config.steps:
        raise UserError(
            f"--steps {config.steps} is below the step {checkpoint['step']} the run has reached; "
            f"pass --steps {checkpoint['step']} or more"
        )
    load_state(trainer.model, checkpoint["model"], path)
    trainer.optimizer.load_state_dict(checkpoint["optimizer"])
    trainer.scheduler.load_state_dict(checkpoint["scheduler"])
    trainer.sampler.load_state_dict(checkpoint["sampler"])
    _set_rng_state(checkpoint["rng"][trainer.world.rank % len(checkpoint["rng"])])
    trainer.step, trainer.best = checkpoint["step"], checkpoint["best"]
    changed += apply_optimiser_settings(trainer, saved)
    moved = environment.changes(checkpoint.get("runtime"), trainer.runtime)
    changed = [c for c in changed if c not in moved]  # e.g. threads: said once, below
    if changed and trainer.world.main:
        print(f"fwp: changed on resume: {'; '.join(changed)}", flush=True)
    if moved and trainer.world.main:
        print(f"fwp: changed on resume: {'; '.join(moved)} (the run goes on, but is no "
              f"longer bit-identical to one that ran without stopping)", flush=True)


def apply_optimiser_settings(trainer: Trainer, saved: dict) -> list[str]:
    """Give the restored optimiser and schedule the config's rate, schedule and Adam settings
    (the checkpoint's were restored with its state), so that the run does what config.json
    says. Returns the change of the next step's learning rate, if any."""
    config, optim = trainer.config, trainer.config.optim
    scheduler = trainer.scheduler
    groups = trainer.optimizer.param_groups
    before = [group["lr"] for group in groups]
    scheduler.base_lrs = [optim.lr] * len(groups)
    for group in groups:
        group.update(initial_lr=optim.lr, betas=(optim.adam_beta1, optim.adam_beta2),
                     eps=optim.adam_eps, weight_decay=optim.weight_decay,
                     lr=optim.lr * lr_factor(config, scheduler.last_epoch))
    scheduler._last_lr = [group["lr"] for group in groups]  # what get_last_lr reports
    if before[0] == groups[0]["lr"]:
        return []
    return [f"learning rate of step {trainer.step + 1}: {before[0]:.3g} → {groups[0]['lr']:.3g} "
            f"(the {optim.schedule} schedule of --lr {optim.lr:g} over --steps {config.steps}, "
            f"as a run started with them would have)"]


def save_checkpoint(trainer: Trainer) -> None:
    """``checkpoint.pt``: everything :func:`load_training_state` needs (every rank's RNG)."""
    rng = _gather(trainer.world, _rng_state())
    if trainer.world.main:
        write_atomic(trainer.run / CHECKPOINT, {
            "model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(), "sampler": trainer.sampler.state_dict(),
            "rng": rng, "step": trainer.step, "best": trainer.best,
            "config": to_dict(trainer.config),
            "image_shape": list(trainer.image_shape), "runtime": trainer.runtime,
        })


def episode_loss(
    net: torch.nn.Module,
    episode: Episode,
    loss: LossConfig,
    *,
    queries: int | None = None,
    with_extra: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Eq. 5 on a batch of episodes: the learner (``net``, a :class:`FewShotLearner` or its DDP
    wrapper) reads the support set, predicts the first ``queries`` queries of each episode (None:
    all) and, ``with_extra``, again after the extra examples. Returns the loss, its terms and
    which student predictions were right."""
    query_images = episode.query_images[:, :queries]
    query_labels = episode.query_labels[:, :queries]
    extra = (episode.extra_images, episode.extra_labels) if with_extra else ()
    out = net(episode.support_images, episode.support_labels, query_images, *extra)
    value, parts = bootstrap_loss(
        out.student_logits, query_labels, out.teacher_logits,
        beta1=loss.beta1, beta2=loss.beta2, beta3=loss.beta3, distill=loss.distill,
        student_state=out.student_shifts, teacher_state=out.teacher_shifts,
    )
    return value, parts, out.student_logits.argmax(-1) == query_labels


def train_step(trainer: Trainer) -> StepResult:
    """Gradients of Eq. 5 over ``accumulate`` micro-batches of this rank's next episodes (DDP
    averages them across ranks on the last one), clipped; the optimiser does not step yet."""
    config, optim, world = trainer.config, trainer.config.optim, trainer.world
    queries = 1 if config.data.single_query else None  # the first query of each episode, or all
    trainer.optimizer.zero_grad(set_to_none=True)
    loss_sum, accuracy_sum, parts_sum = 0.0, 0.0, {}
    for micro in range(optim.accumulate):
        sampler = trainer.sampler
        first = sampler.next_episode + world.rank * optim.batch_size
        episode = sampler.batch(range(first, first + optim.batch_size)).to(world.device)
        sampler.next_episode += world.size * optim.batch_size
        sync = micro == optim.accumulate - 1 or world.size == 1
        with nullcontext() if sync else trainer.net.no_sync():
            with autocast(world.device, config.amp):
                if trainer.task is not None:  # a stream protocol: its own loss
                    loss, parts, accuracy = trainer.task.loss(trainer.model, episode)
                else:
                    loss, parts, correct = episode_loss(
                        trainer.net, episode, config.loss, queries=queries,
                        with_extra=bool(trainer.k_extra))
                    accuracy = correct.float().mean().item()
            (loss / optim.accumulate).backward()
        loss_sum += loss.item() / optim.accumulate
        accuracy_sum += accuracy / optim.accumulate
        for key, value in parts.items():
            parts_sum[key] = parts_sum.get(key, 0.0) + value.item() / optim.accumulate
    clip = optim.grad_clip if optim.grad_clip > 0 else float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), clip))
    return StepResult(loss_sum, accuracy_sum, parts_sum, grad_norm)


def check_finite(trainer: Trainer, result: StepResult, stop_requested: bool) -> bool:
    """Raise :class:`TrainingDiverged` if the loss or gradient is not finite on any rank, before
    the optimiser steps (so that the last checkpoint stays good); whether any rank asked to
    stop."""
    diverged = not math.isfinite(result.loss) or not math.isfinite(result.grad_norm)
    flags = torch.tensor([diverged, stop_requested], dtype=torch.float32,
                         device=trainer.world.device)
    if trainer.world.size > 1:
        dist.all_reduce(flags)
    if flags[0] > 0:
        path = trainer.run / CHECKPOINT
        terms = ", ".join(f"{k} {v:.4g}" for k, v in result.parts.items())
        kept = (f"the last good checkpoint {path} is kept" if path.is_file()
                else "no checkpoint was written yet")
        raise TrainingDiverged(
            f"the loss became {result.loss} (gradient norm {result.grad_norm}; terms: {terms}) "
            f"at step {trainer.step + 1}; training stopped and {kept}. Lower --lr, raise "
            f"--warmup or set --grad-clip, then resume or start again"
        )
    return bool(flags[1] > 0)


def validate_and_save(trainer: Trainer, log: MetricsLog) -> None:
    """Validate on fixed episodes (rank 0), keep ``best.pt`` when accuracy improved, then save
    the checkpoint."""
    config = trainer.config
    if trainer.val_task is not None:
        result = trainer.val_task.evaluate(trainer.model, config.val_episodes, amp=config.amp)
    elif trainer.world.main:
        result = evaluate(
            trainer.model, trainer.val_set, config.data.n_way, config.data.k_shot,
            config.val_episodes, seed=VAL_SEED, amp=config.amp,
            single_query=config.data.single_query,
        )
    if trainer.world.main:
        values = {key: result[key] for key in ("accuracy", "ci95", "loss")}
        if values["accuracy"] > trainer.best["accuracy"]:
            trainer.best = {"accuracy": values["accuracy"], "step": trainer.step}
            write_atomic(trainer.run / BEST, {
                "model": trainer.model.state_dict(), "step": trainer.step, "best": trainer.best,
                "config": to_dict(config), "image_shape": list(trainer.image_shape),
            })
        log.validation(trainer.step, values, trainer.best)
    if trainer.world.size > 1:
        trainer.best = _gather(trainer.world, trainer.best)[0]
    save_checkpoint(trainer)


def train(
    config: RunConfig,
    run: str | Path,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) the run in folder ``run``.

    Returns ``{"status": finished | stopped | interrupted, "step", "best": {accuracy, step},
    "model"}`` (the trained module, unwrapped from DDP).

    ``stop_after``: stop (and save) once this many optimiser steps are done, as if interrupted
    there — the schedule still runs to ``config.steps``.
    """
    trainer = start(config, Path(run), resume)
    last_step = min(config.steps, stop_after if stop_after is not None else config.steps)
    log = MetricsLog(trainer, progress)
    log.record(trainer.step, "runtime", trainer.runtime)
    status, saved_at = "finished", trainer.step if resume else -1  # step of checkpoint.pt
    trainer.model.train()
    try:
        with _StopRequest() as stop:
            while trainer.step < last_step:
                result = train_step(trainer)
                stop_now = check_finite(trainer, result, stop.requested)
                trainer.optimizer.step()
                trainer.scheduler.step()
                trainer.step += 1
                log.step(trainer.step, result, trainer.scheduler.get_last_lr()[0], last_step)
                if trainer.step % config.eval_every == 0 or trainer.step == config.steps:
                    validate_and_save(trainer, log)
                    saved_at = trainer.step
                if stop_now:
                    status = "interrupted"
                    break
            else:
                status = "finished" if trainer.step >= config.steps else "stopped"
            if saved_at != trainer.step:
                save_checkpoint(trainer)
    except KeyboardInterrupt:
        status = "aborted"
        raise
    except WriteFailed as error:
        kept = (f" with --resume (the checkpoint of step {saved_at} is intact)" if saved_at >= 0
                else " without --resume (no checkpoint was written yet)")
        raise WriteFailed(f"{error}{kept}") from None
    finally:
        log.close()
    return {"status": status, "step": trainer.step, "best": trainer.best, "model": trainer.model}
