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
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel

from fwp import environment
from fwp.data import EpisodeSampler
from fwp.errors import UserError
from fwp.fewshot.checkpoint import (
    BEST,
    CHECKPOINT,
    CONFIG,
    METRICS,
    check_matches,
    load_checkpoint,
    load_state,
    write_atomic,
)
from fwp.fewshot.config import RunConfig, to_dict
from fwp.fewshot.evaluate import VAL_SEED, autocast, evaluate, load_split
from fwp.fewshot.losses import bootstrap_loss
from fwp.fewshot.model import FewShotLearner


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
    """metrics.jsonl (always) and TensorBoard (when installed), written by rank 0 only; both
    continue from ``step``, dropping what was logged after it."""

    def __init__(self, run: Path, enabled: bool, step: int = 0) -> None:
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        truncate_metrics(run / METRICS, step)
        self.file = (run / METRICS).open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run / "tb"), purge_step=step + 1 if step else None)
        except ImportError:
            self.writer = None

    def record(self, step: int, kind: str, info: dict[str, Any]) -> None:
        """A row that is not a scalar series (``kind`` "runtime": threads, operators ...)."""
        if self.enabled:
            self.file.write(json.dumps({"step": step, "split": kind, **info}) + "\n")
            self.file.flush()

    def log(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, "split": split, **values}) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.writer is not None:
                self.writer.close()


def prepare_run(config: RunConfig, run: Path, resume: bool) -> None:
    """Create the run folder (or check it for resuming) and write the resolved config."""
    has_checkpoint = (run / CHECKPOINT).is_file()
    if resume and not has_checkpoint:
        raise UserError(f"cannot resume: {run / CHECKPOINT} does not exist")
    if not resume and has_checkpoint:
        raise UserError(
            f"{run} already holds a run; pass --resume to continue it, or choose another --out"
        )
    run.mkdir(parents=True, exist_ok=True)
    write_atomic(run / CONFIG, to_dict(config))


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
    run = Path(run)
    config.validate()
    world = setup_world(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    runtime = environment.runtime(world.device)  # compiles the CPU kernels now if not cached
    if world.main:
        print(f"fwp: {environment.describe(runtime)}", flush=True)
        prepare_run(config, run, resume)
    if world.size > 1:
        dist.barrier()

    random.seed(config.seed)
    np.random.seed(config.seed)  # noqa: NPY002
    torch.manual_seed(config.seed)
    train_set = load_split(config, "train")
    val_set = load_split(config, config.data.val_split) if world.main else None
    k_extra = config.data.k_extra if config.bootstrapped else 0
    sampler = EpisodeSampler(
        train_set, config.data.n_way, config.data.k_shot, n_query=config.data.n_query,
        k_extra=k_extra, seed=config.seed,
    )
    model = FewShotLearner(config, train_set.image_shape).to(world.device)
    optim = config.optim
    optimizer = torch.optim.Adam(
        model.parameters(), lr=optim.lr, betas=(optim.adam_beta1, optim.adam_beta2),
        eps=optim.adam_eps, weight_decay=optim.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(config, s))
    step, best = 0, {"accuracy": -1.0, "step": 0}
    if resume:
        checkpoint = load_checkpoint(run / CHECKPOINT)
        check_matches(checkpoint, config, run / CHECKPOINT)
        load_state(model, checkpoint["model"], run / CHECKPOINT)
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        sampler.load_state_dict(checkpoint["sampler"])
        _set_rng_state(checkpoint["rng"][world.rank % len(checkpoint["rng"])])
        step, best = checkpoint["step"], checkpoint["best"]
        changed = environment.changes(checkpoint.get("runtime"), runtime)
        if changed and world.main:
            print(f"fwp: changed on resume: {'; '.join(changed)} (the run goes on, but is no "
                  f"longer bit-identical to one that ran without stopping)", flush=True)
    net = model
    if world.size > 1:
        net = DistributedDataParallel(
            model, device_ids=[world.device.index] if world.device.type == "cuda" else None
        )

    def save(path: Path = run / CHECKPOINT) -> None:
        rng = _gather(world, _rng_state())
        if world.main:
            write_atomic(path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "sampler": sampler.state_dict(),
                "rng": rng, "step": step, "best": best, "config": to_dict(config),
                "image_shape": list(train_set.image_shape), "runtime": runtime,
            })

    def validate() -> dict[str, float]:
        result = evaluate(
            model, val_set, config.data.n_way, config.data.k_shot, config.val_episodes,
            seed=VAL_SEED, amp=config.amp, single_query=config.data.single_query,
        )
        return {"accuracy": result["accuracy"], "ci95": result["ci95"], "loss": result["loss"]}

    log = MetricsLog(run, world.main, step)
    log.record(step, "runtime", runtime)
    bar = None
    if progress and world.main:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, initial=step, desc=run.name, dynamic_ncols=True,
                   unit="step")
    last_step = min(config.steps, stop_after if stop_after is not None else config.steps)
    window = {"loss": 0.0, "accuracy": 0.0, "n": 0, "time": time.perf_counter()}
    queries = 1 if config.data.single_query else None  # the first query of each episode, or all
    status, saved_at = "finished", -1
    model.train()
    try:
        with _StopRequest() as stop:
            while step < last_step:
                optimizer.zero_grad(set_to_none=True)
                total_loss, total_acc, parts_sum = 0.0, 0.0, {}
                for micro in range(optim.accumulate):
                    first = sampler.next_episode + world.rank * optim.batch_size
                    episode = sampler.batch(range(first, first + optim.batch_size))
                    sampler.next_episode += world.size * optim.batch_size
                    episode = episode.to(world.device)
                    query_images, query_labels = (
                        episode.query_images[:, :queries], episode.query_labels[:, :queries])
                    sync = micro == optim.accumulate - 1 or world.size == 1
                    # DDP averages gradients across ranks only on the last micro-batch.
                    with nullcontext() if sync else net.no_sync():
                        with autocast(world.device, config.amp):
                            out = net(
                                episode.support_images, episode.support_labels, query_images,
                                *((episode.extra_images, episode.extra_labels) if k_extra else ()),
                            )
                            loss, parts = bootstrap_loss(
                                out.student_logits, query_labels, out.teacher_logits,
                                beta1=config.loss.beta1, beta2=config.loss.beta2,
                                beta3=config.loss.beta3, distill=config.loss.distill,
                                student_state=out.student_shifts,
                                teacher_state=out.teacher_shifts,
                            )
                        (loss / optim.accumulate).backward()
                    total_loss += loss.item() / optim.accumulate
                    correct = out.student_logits.argmax(-1) == query_labels
                    total_acc += correct.float().mean().item() / optim.accumulate
                    for key, value in parts.items():
                        parts_sum[key] = parts_sum.get(key, 0.0) + value.item() / optim.accumulate
                clip = optim.grad_clip if optim.grad_clip > 0 else float("inf")
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
                flags = torch.tensor(
                    [not math.isfinite(total_loss) or not math.isfinite(grad_norm),
                     stop.requested], dtype=torch.float32, device=world.device,
                )
                if world.size > 1:
                    dist.all_reduce(flags)
                if flags[0] > 0:
                    terms = ", ".join(f"{k} {v:.4g}" for k, v in parts_sum.items())
                    kept = (
                        f"the last good checkpoint {run / CHECKPOINT} is kept"
                        if (run / CHECKPOINT).is_file() else "no checkpoint was written yet"
                    )
                    raise TrainingDiverged(
                        f"the loss became {total_loss} (gradient norm {grad_norm}; terms: {terms}) "
                        f"at step {step + 1}; training stopped and {kept}. Lower --lr, raise "
                        f"--warmup or set --grad-clip, then resume or start again"
                    )
                optimizer.step()
                scheduler.step()
                step += 1
                window["loss"] += total_loss
                window["accuracy"] += total_acc
                window["n"] += 1
                if bar is not None:
                    bar.update(1)
                if step % config.log_every == 0 or step == last_step:
                    elapsed = time.perf_counter() - window["time"]
                    values = {
                        "loss": window["loss"] / window["n"],
                        "accuracy": 100 * window["accuracy"] / window["n"],
                        "lr": scheduler.get_last_lr()[0],
                        "grad_norm": grad_norm,
                        "steps_per_s": window["n"] / max(elapsed, 1e-9),
                        **{f"loss_{k}": v for k, v in parts_sum.items()},
                    }
                    log.log(step, "train", values)
                    if bar is not None:
                        bar.set_postfix(loss=f"{values['loss']:.3f}",
                                        acc=f"{values['accuracy']:.1f}",
                                        steps_s=f"{values['steps_per_s']:.2f}")
                    window = {"loss": 0.0, "accuracy": 0.0, "n": 0,
                              "time": time.perf_counter()}
                if step % config.eval_every == 0 or step == config.steps:
                    if world.main:
                        values = validate()
                        log.log(step, "val", values)
                        if values["accuracy"] > best["accuracy"]:
                            best = {"accuracy": values["accuracy"], "step": step}
                            write_atomic(run / BEST, {
                                "model": model.state_dict(), "step": step, "best": best,
                                "config": to_dict(config),
                                "image_shape": list(train_set.image_shape),
                            })
                        if bar is not None:
                            bar.write(f"step {step}: val accuracy {values['accuracy']:.2f} "
                                      f"± {values['ci95']:.2f} (best {best['accuracy']:.2f} "
                                      f"at {best['step']})")
                    if world.size > 1:
                        best = _gather(world, best)[0]
                    save()
                    saved_at = step
                if flags[1] > 0:
                    status = "interrupted"
                    break
            else:
                status = "finished" if step >= config.steps else "stopped"
            if saved_at != step:
                save()
    except KeyboardInterrupt:
        status = "aborted"
        raise
    finally:
        if bar is not None:
            bar.close()
        log.close()
    return {"status": status, "step": step, "best": best, "model": model}
