"""Training and evaluation of one formal-language run, with a resumable run folder.

A run folder holds ``config.json`` (the resolved :class:`RunConfig`), ``checkpoint.pt`` (model,
optimiser, step, the selected model so far; rewritten atomically every ``eval_every`` steps) and,
once finished, ``metrics.json`` (per-bin accuracies of the selected model, which rule selected
it and when, the thread count). Re-running the same config in the same folder resumes from the
checkpoint, or does nothing when ``metrics.json`` exists.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fwp import environment
from fwp.config import read_file, to_dict, write_atomic
from fwp.errors import UserError, brief
from fwp.formal.config import RunConfig, from_dict
from fwp.formal.data import (
    Bin,
    DataSets,
    batch_loss,
    batches,
    encode,
    position_correct,
    published_data,
    sample_test_set,
)
from fwp.formal.languages import Language, get_language
from fwp.formal.model import FormalModel

CONFIG, CHECKPOINT, METRICS = "config.json", "checkpoint.pt", "metrics.json"
VALID_KEY = 987_654_321  # offsets data_seed for the stream protocol's validation set


@torch.no_grad()
def evaluate(model: FormalModel, language: Language, strings: list[str],
             batch_size: int = 100) -> dict[str, float]:
    """Sequence accuracy (every scored position right), position accuracy, loss."""
    was_training = model.training
    model.eval()
    seq_ok = pos_ok = positions = 0
    loss_sum = 0.0
    for chunk in batches(strings, batch_size):
        batch = encode(language, chunk)
        logits = model(batch.tokens)
        exact = position_correct(logits, batch) | ~batch.mask
        seq_ok += int(exact.all(-1).sum())
        pos_ok += int((exact & batch.mask).sum())
        positions += int(batch.mask.sum())
        loss_sum += float(batch_loss(logits, batch)) * int(batch.mask.sum())
    model.train(was_training)
    return {
        "seq_acc": 100.0 * seq_ok / len(strings),
        "pos_acc": 100.0 * pos_ok / positions,
        "loss": loss_sum / positions,
    }


def load_data(config: RunConfig, cache_dir: Path | None = None) -> DataSets:
    """The run's data sets: fixed ones (published protocol) or, for the stream protocol, a
    validation set and uniformly sampled test sets (training strings are drawn per step)."""
    if config.protocol == "published":
        return published_data(config.language, config.train_bin, config.bins, config.train_size,
                              config.valid_size, config.eval_size, config.data_seed, cache_dir)
    language = get_language(config.language)
    valid = sample_test_set(language, Bin.parse(config.train_bin), config.valid_size,
                            config.data_seed + VALID_KEY)
    tests = {str(Bin.parse(b)): sample_test_set(language, Bin.parse(b), config.eval_size,
                                                config.data_seed) for b in config.bins}
    return DataSets(language, [], valid, tests)


def evaluate_bins(model: FormalModel, config: RunConfig, bins: list[str],
                  data: DataSets | None = None) -> dict[str, dict]:
    """Accuracy on the fixed test set of each bin (those of ``data`` where it has the bin)."""
    language = get_language(config.language)
    results = {}
    for text in bins:
        key = str(Bin.parse(text))
        if data is not None and key in data.test_bins:
            strings = data.test(key)
        elif config.protocol == "published":
            strings = published_data(config.language, config.train_bin, [key], config.train_size,
                                     config.valid_size, config.eval_size,
                                     config.data_seed).test(key)
        else:
            strings = sample_test_set(language, Bin.parse(key), config.eval_size,
                                      config.data_seed)
        results[key] = evaluate(model, language, strings)
    return results


# -- selection rules --------------------------------------------------------------------------


def selection_score(rule: str, model: FormalModel, config: RunConfig,
                    data: DataSets) -> dict[str, Any]:
    """The score of the model under ``rule``: higher ``score`` wins, then lower ``tiebreak``.

    ``validation`` reads only ``data.valid``; ``published`` (the public code's rule) the mean
    sequence accuracy over every test bin; ``last`` scores nothing (the final model is kept).
    """
    if rule == "validation":
        result = evaluate(model, data.language, data.valid)
        return {"score": result["seq_acc"], "tiebreak": result["loss"],
                "valid_seq_acc": result["seq_acc"], "valid_loss": round(result["loss"], 6)}
    if rule == "published":
        bins = {b: evaluate(model, data.language, data.test(b))["seq_acc"]
                for b in data.test_bins}
        return {"score": sum(bins.values()) / len(bins), "tiebreak": 0.0,
                "test_seq_acc": bins}
    return {"score": 0.0, "tiebreak": 0.0}


def better(new: dict[str, Any], best: dict[str, Any] | None) -> bool:
    if best is None:
        return True
    return (new["score"], -new["tiebreak"]) > (best["score"], -best["tiebreak"])


# -- run folders ------------------------------------------------------------------------------


def read_config(run: Path) -> RunConfig:
    path = Path(run) / CONFIG
    if not path.exists():
        raise UserError(f"{run} is not a run folder (no {CONFIG}); train one with fwp formal train")
    return from_dict(read_file(path), str(path))


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by :func:`train`; a damaged file raises ``UserError`` naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 — truncated or foreign: the same user problem
        raise UserError(
            f"cannot read {path} ({brief(error)}): the file "
            f"is damaged or not a checkpoint; delete it and re-run the same command to train "
            f"this run from the start"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"{path} is not a checkpoint of fwp formal train; delete it and re-run "
                        f"the same command to train this run from the start")
    return state


def load_model(run: Path) -> tuple[RunConfig, FormalModel]:
    """The config and selected model of a run folder (the latest one while it still trains)."""
    config = read_config(run)
    if not (Path(run) / CHECKPOINT).exists():
        raise UserError(f"{run} has no {CHECKPOINT}; its training never reached a checkpoint")
    model = FormalModel(get_language(config.language), config.network)
    state = load_checkpoint(Path(run) / CHECKPOINT)
    done = (Path(run) / METRICS).exists() and state.get("best") is not None
    model.load_state_dict(state["best"]["model"] if done else state["model"])
    return config, model


RUNTIME_FIELDS = {"threads"}  # how a run is executed, not what it computes


def config_changes(config: RunConfig, out: Path) -> list[str]:
    """Fields in which ``config`` differs from the run already in ``out`` (none if empty)."""
    path = Path(out) / CONFIG
    if not path.exists():
        return []
    return [
        name for name in _diff(read_file(path), to_dict(config))
        if name not in RUNTIME_FIELDS
    ]


# Fields a re-run may change in a run that has a checkpoint: they lengthen its training (the
# schedule is constant, so more epochs or steps simply continue it) or say how it runs. Any other
# change would mix two runs in one folder.
EXTENDABLE_FIELDS = {"epochs", "steps", "threads"}


def check_folder(config: RunConfig, out: Path) -> list[str]:
    """What re-running ``config`` in ``out`` does, checked before any work: ``[]`` for a new
    run, a run that never reached its first checkpoint (its config.json is replaced) or the same
    run; else the extending changes (``["epochs 300 → 500"]``). Raises ``UserError`` for a file
    named as the folder or a change of anything but :data:`EXTENDABLE_FIELDS`."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; choose another --out")
    if not (out / CONFIG).exists() or not (out / CHECKPOINT).exists():
        return []
    saved = read_file(out / CONFIG)
    changed = _diff(saved, to_dict(config))
    refused = [name for name in changed if name not in EXTENDABLE_FIELDS]
    if refused:
        raise UserError(
            f"{out} holds a run with a different config (changed: {', '.join(refused)}); only "
            f"{', '.join(sorted(EXTENDABLE_FIELDS))} may change when a run is re-run; pass "
            f"another --out, or delete the folder to start over"
        )
    return [f"{name} {saved[name]} → {getattr(config, name)}" for name in changed
            if name != "threads"]


def _claim_folder(config: RunConfig, out: Path) -> None:
    """Create ``out`` and write ``config`` there; once every check has passed."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / CONFIG).exists() or config_changes(config, out):
        write_atomic(out / CONFIG, to_dict(config))


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ; a key that only ``b`` has is a field added to the config
    since ``a`` was written, read as its default (so older run folders still resume)."""
    out = []
    for key in sorted(set(a) | set(b)):
        if key not in a:
            continue
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out += _diff(a[key], b[key], f"{prefix}{key}.")
        elif a.get(key) != b.get(key):
            out.append(prefix + key)
    return out


# -- training ---------------------------------------------------------------------------------


def steps_per_epoch(config: RunConfig) -> int:
    return math.ceil(config.train_size / config.batch_size)


def total_steps(config: RunConfig) -> int:
    if config.protocol == "published":
        return config.epochs * steps_per_epoch(config)
    return config.steps


def training_batches(config: RunConfig, data: DataSets, step: int,
                     stream_rng: np.random.Generator) -> Iterator[list[str]]:
    """Batches from optimiser step ``step`` on. Published protocol: epoch e visits the training
    set in the order of a permutation seeded by (seed, e), so a resumed run continues exactly
    where it stopped. Stream protocol: fresh uniform strings of the training bin."""
    if config.protocol == "stream":
        train_bin = Bin.parse(config.train_bin)
        while True:
            yield data.language.sample_bin(train_bin.lo, train_bin.hi, config.batch_size,
                                           stream_rng)
    per_epoch = steps_per_epoch(config)
    epoch, offset = divmod(step, per_epoch)
    while True:
        order = np.random.default_rng([config.seed, epoch]).permutation(len(data.train))
        for i in range(offset, per_epoch):
            chunk = order[i * config.batch_size:(i + 1) * config.batch_size]
            yield [data.train[j] for j in chunk]
        epoch, offset = epoch + 1, 0


def train(config: RunConfig, out: Path | None = None,
          log: Callable[[str], None] | None = print,
          data_cache: Path | None = None) -> dict[str, Any]:
    """Train ``config``; with ``out``, checkpoint there and write config and metrics.

    Returns the metrics: per-bin ``seq_acc``/``pos_acc``/``loss`` of the selected model under
    ``"bins"``, ``"selection"`` (rule, step, score), the ``history``, ``steps_run``,
    ``train_seconds``, ``runtime`` (device, threads, torch, operator path). ``data_cache``: a
    folder for the fixed data sets.
    """
    config.validate()
    log = log or (lambda _msg: None)
    extended: list[str] = []
    if out is not None:
        out = Path(out)
        extended = check_folder(config, out)
        if (out / METRICS).exists() and not extended:
            log(f"{out}: already finished")
            return read_file(out / METRICS)
    if config.threads:
        torch.set_num_threads(config.threads)
    runtime = environment.runtime("cpu")  # compiles the CPU kernels now if not cached

    language = get_language(config.language)
    data = load_data(config, data_cache)
    torch.manual_seed(config.seed)
    model = FormalModel(language, config.network)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  betas=tuple(config.adam_betas), eps=config.adam_eps,
                                  weight_decay=config.weight_decay)
    stream_rng = np.random.default_rng(config.seed)
    step, history, perfect_streak, seconds, best = 0, [], 0, 0.0, None
    if out is not None and (out / CHECKPOINT).exists():
        state = load_checkpoint(out / CHECKPOINT)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        stream_rng.bit_generator.state = state["data_rng"]
        torch.set_rng_state(state["torch_rng"])
        step, history, best = state["step"], state["history"], state["best"]
        perfect_streak, seconds = state["perfect_streak"], state["seconds"]
        log(f"{out}: resuming at step {step}")
        if total_steps(config) < step:
            raise UserError(
                f"{out} is at step {step}, past the {total_steps(config)} steps of this config; "
                f"raise --epochs / --steps to extend it, or leave them as they were"
            )
        changed = environment.changes(state.get("runtime"), runtime) + extended
        if changed:
            log(f"changed on resume: {'; '.join(changed)} (the run goes on, but is no longer "
                f"bit-identical to one that ran without stopping)")

    if out is not None:  # every check has passed: now the folder may be written
        _claim_folder(config, out)
        (out / METRICS).unlink(missing_ok=True)  # an extended run is not finished any more
    n_params = sum(p.numel() for p in model.parameters())
    last_step = total_steps(config)
    log(f"{config.language} × {config.network.model}: {n_params} parameters, "
        f"{last_step} steps, selection: {config.selection}; {environment.describe(runtime)}")
    model.train()
    start = time.perf_counter() - seconds
    stop = perfect_streak >= config.stop_after_perfect > 0
    source = training_batches(config, data, step, stream_rng)
    while step < last_step and not stop:
        loss = train_step(model, optimizer, encode(language, next(source)), config, step)
        step += 1
        if step % config.eval_every == 0 or step == last_step:
            score = selection_score(config.selection, model, config, data)
            if better(score, best):
                best = {"step": step, "model": copy.deepcopy(model.state_dict()), **score}
            perfect_streak = perfect_streak + 1 if score["score"] == 100.0 else 0
            stop = perfect_streak >= config.stop_after_perfect > 0
            history.append({"step": step, "train_loss": round(loss, 6),
                            **{k: v for k, v in score.items() if k != "tiebreak"},
                            "seconds": round(time.perf_counter() - start, 2)})
            log(f"step {step}: train loss {loss:.4f}, {config.selection} score "
                f"{score['score']:.1f}%")
            if out is not None:
                state = {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "data_rng": stream_rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "step": step, "history": history,
                    "perfect_streak": perfect_streak, "best": best,
                    "seconds": time.perf_counter() - start, "runtime": runtime,
                }
                write_atomic(out / CHECKPOINT, state)

    train_seconds = time.perf_counter() - start
    if config.selection != "last" and best is not None:
        model.load_state_dict(best["model"])
    selected = {k: v for k, v in (best or {}).items() if k not in ("model", "tiebreak")}
    metrics = {
        "language": config.language,
        "model": config.network.model,
        "parameters": n_params,
        "steps_run": step,
        "train_seconds": round(train_seconds, 2),
        "runtime": runtime,
        "protocol": config.protocol,
        "selection": {"rule": config.selection,
                      **(selected if config.selection != "last" else {"step": step})},
        "valid": evaluate(model, language, data.valid),
        "bins": evaluate_bins(model, config, config.bins, data),
        "history": history,
    }
    if out is not None:
        write_atomic(out / METRICS, metrics)
    return metrics


def train_step(model: FormalModel, optimizer: torch.optim.Optimizer, batch, config: RunConfig,
               step: int) -> float:
    """One optimiser step on ``batch``; a non-finite loss is a UserError naming the fix."""
    loss = batch_loss(model(batch.tokens), batch)
    if not math.isfinite(loss.item()):
        raise UserError(
            f"training loss became {loss.item()} at step {step + 1} "
            f"({config.language}, {config.network.model}); lower --lr (now {config.lr}) "
            f"or set --grad-clip (now {config.grad_clip})"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return loss.item()
