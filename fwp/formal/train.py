"""Training and evaluation of one formal-language run, with a resumable run folder.

A run folder holds ``config.json`` (the resolved :class:`RunConfig`), ``checkpoint.pt`` (model,
optimiser, step, data-stream state; rewritten atomically every ``eval_every`` steps) and, once
finished, ``metrics.json`` (per-bin accuracies). Re-running the same config in the same folder
resumes from the checkpoint, or does nothing when ``metrics.json`` exists.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from fwp import environment
from fwp.errors import UserError
from fwp.formal.config import RunConfig, from_dict, load_json, to_dict
from fwp.formal.data import Bin, batches, encode, sample_test_set
from fwp.formal.languages import Language, get_language
from fwp.formal.model import FormalModel

CONFIG, CHECKPOINT, METRICS = "config.json", "checkpoint.pt", "metrics.json"
VALID_KEY = 987_654_321  # offsets data_seed for the validation set (fresh strings of train_bin)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` then rename over ``path``: a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def masked_bce(logits: torch.Tensor, batch_targets: torch.Tensor, mask: torch.Tensor):
    """Mean binary cross-entropy over real positions and all classes."""
    loss = F.binary_cross_entropy_with_logits(logits, batch_targets, reduction="none")
    return (loss.sum(-1) * mask).sum() / (mask.sum() * logits.shape[-1])


@torch.no_grad()
def evaluate(model: FormalModel, language: Language, strings: list[str],
             batch_size: int = 100) -> dict[str, float]:
    """Sequence accuracy (every position's thresholded set exact), position accuracy, loss."""
    was_training = model.training
    model.eval()
    seq_ok = pos_ok = positions = 0
    loss_sum = 0.0
    for chunk in batches(strings, batch_size):
        batch = encode(language, chunk)
        logits = model(batch.tokens)
        exact = ((logits > 0) == (batch.targets > 0.5)).all(-1) | ~batch.mask
        seq_ok += int(exact.all(-1).sum())
        pos_ok += int((exact & batch.mask).sum())
        positions += int(batch.mask.sum())
        loss_sum += float(masked_bce(logits, batch.targets, batch.mask)) * int(batch.mask.sum())
    model.train(was_training)
    return {
        "seq_acc": 100.0 * seq_ok / len(strings),
        "pos_acc": 100.0 * pos_ok / positions,
        "loss": loss_sum / positions,
    }


def evaluate_bins(model: FormalModel, config: RunConfig, bins: list[str]) -> dict[str, dict]:
    """Accuracy on the fixed test set of each bin (seeded by ``config.data_seed``)."""
    language = get_language(config.language)
    results = {}
    for text in bins:
        bin_ = Bin.parse(text)
        strings = sample_test_set(language, bin_, config.eval_size, config.data_seed)
        results[str(bin_)] = evaluate(model, language, strings)
    return results


def read_config(run: Path) -> RunConfig:
    path = Path(run) / CONFIG
    if not path.exists():
        raise UserError(f"{run} is not a run folder (no {CONFIG}); train one with fwp formal train")
    return from_dict(RunConfig, load_json(path), str(path))


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by :func:`train`; a damaged file raises ``UserError`` naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 — truncated or foreign: the same user problem
        raise UserError(
            f"cannot read {path} ({type(error).__name__}: {str(error).splitlines()[0]}): the file "
            f"is damaged or not a checkpoint; delete it and re-run the same command to train "
            f"this run from the start"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"{path} is not a checkpoint of fwp formal train; delete it and re-run "
                        f"the same command to train this run from the start")
    return state


def load_model(run: Path) -> tuple[RunConfig, FormalModel]:
    """The config and trained model of a run folder."""
    config = read_config(run)
    if not (Path(run) / CHECKPOINT).exists():
        raise UserError(f"{run} has no {CHECKPOINT}; its training never reached a checkpoint")
    model = FormalModel(get_language(config.language), config.network)
    state = load_checkpoint(Path(run) / CHECKPOINT)
    model.load_state_dict(state["model"])
    return config, model


RUNTIME_FIELDS = {"threads"}  # how a run is executed, not what it computes


def config_changes(config: RunConfig, out: Path) -> list[str]:
    """Fields in which ``config`` differs from the run already in ``out`` (none if empty)."""
    path = Path(out) / CONFIG
    if not path.exists():
        return []
    return [
        name for name in _diff(load_json(path), to_dict(config))
        if name not in RUNTIME_FIELDS
    ]


def _claim_folder(config: RunConfig, out: Path) -> None:
    """Create ``out`` for ``config``, or check that it already belongs to ``config``."""
    out.mkdir(parents=True, exist_ok=True)
    changed = config_changes(config, out)
    if changed:
        raise UserError(
            f"{out} holds a run with a different config (changed: {', '.join(changed)}); "
            f"pass another --out, or delete the folder to start over"
        )
    if not (out / CONFIG).exists():
        write_json(out / CONFIG, to_dict(config))


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out += _diff(a[key], b[key], f"{prefix}{key}.")
        elif a.get(key) != b.get(key):
            out.append(prefix + key)
    return out


def train(config: RunConfig, out: Path | None = None,
          log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Train ``config``; with ``out``, checkpoint there and write config and metrics.

    Returns the metrics: per-bin ``seq_acc``/``pos_acc``/``loss`` under ``"bins"``, the training
    ``history``, ``steps_run``, ``train_seconds``.
    """
    config.validate()
    log = log or (lambda _msg: None)
    if out is not None:
        out = Path(out)
        _claim_folder(config, out)
        if (out / METRICS).exists():
            log(f"{out}: already finished")
            return load_json(out / METRICS)
    if config.threads:
        torch.set_num_threads(config.threads)
    runtime = environment.runtime("cpu")  # compiles the CPU kernels now if not cached

    language = get_language(config.language)
    train_bin = Bin.parse(config.train_bin)
    torch.manual_seed(config.seed)
    model = FormalModel(language, config.network)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    data_rng = np.random.default_rng(config.seed)
    valid = sample_test_set(language, train_bin, config.eval_size, config.data_seed + VALID_KEY)

    step, history, perfect_streak, seconds = 0, [], 0, 0.0
    if out is not None and (out / CHECKPOINT).exists():
        state = load_checkpoint(out / CHECKPOINT)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        data_rng.bit_generator.state = state["data_rng"]
        torch.set_rng_state(state["torch_rng"])
        step, history = state["step"], state["history"]
        perfect_streak, seconds = state["perfect_streak"], state["seconds"]
        log(f"{out}: resuming at step {step}")
        changed = environment.changes(state.get("runtime"), runtime)
        if changed:
            log(f"changed on resume: {'; '.join(changed)} (the run goes on, but is no longer "
                f"bit-identical to one that ran without stopping)")

    n_params = sum(p.numel() for p in model.parameters())
    log(f"{config.language} × {config.network.model}: {n_params} parameters; "
        f"{environment.describe(runtime)}")
    model.train()
    start = time.perf_counter() - seconds
    stop = perfect_streak >= config.stop_after_perfect > 0
    while step < config.steps and not stop:
        batch = encode(language, language.sample_bin(train_bin.lo, train_bin.hi,
                                                     config.batch_size, data_rng))
        loss = masked_bce(model(batch.tokens), batch.targets, batch.mask)
        if not math.isfinite(loss.item()):
            raise UserError(
                f"training loss became {loss.item()} at step {step + 1} "
                f"({config.language}, {config.network.model}); lower --lr (now {config.lr}) "
                f"or --grad-clip (now {config.grad_clip})"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1

        if step % config.eval_every == 0 or step == config.steps:
            result = evaluate(model, language, valid)
            history.append({"step": step, "train_loss": round(loss.item(), 6),
                            "valid_seq_acc": result["seq_acc"],
                            "seconds": round(time.perf_counter() - start, 2)})
            perfect_streak = perfect_streak + 1 if result["seq_acc"] == 100.0 else 0
            stop = perfect_streak >= config.stop_after_perfect > 0
            log(f"step {step}: train loss {loss.item():.4f}, "
                f"valid seq acc {result['seq_acc']:.1f}%")
            if out is not None:
                state = {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "data_rng": data_rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                    "step": step, "history": history, "perfect_streak": perfect_streak,
                    "seconds": time.perf_counter() - start, "runtime": runtime,
                }
                write_atomic(out / CHECKPOINT, lambda tmp, s=state: torch.save(s, tmp))

    train_seconds = time.perf_counter() - start
    metrics = {
        "language": config.language,
        "model": config.network.model,
        "parameters": n_params,
        "steps_run": step,
        "train_seconds": round(train_seconds, 2),
        "runtime": runtime,
        "bins": evaluate_bins(model, config, config.bins),
        "history": history,
    }
    if out is not None:
        write_json(out / METRICS, metrics)
    return metrics
