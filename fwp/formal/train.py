"""Training and evaluation of one formal-language run: its step and its selection rule,
trained by the run core's loop (:mod:`fwp.runs`).

A run folder (:mod:`fwp.runs.folder`) holds ``config.json``, ``checkpoint.pt`` (rewritten
atomically every ``eval_every`` steps), ``best.pt`` (the model selected so far),
``metrics.jsonl`` and, once finished, ``metrics.json`` (per-bin accuracies of the selected
model, which rule selected it and when, the thread count). Re-running the same config in the
same folder resumes from the checkpoint, or does nothing when ``metrics.json`` exists; a re-run
may change only the fields whose resume policy allows it (``epochs``, ``steps``, ``threads``).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fwp import runs
from fwp.config import read_file, to_dict, write_atomic
from fwp.errors import RunStopped, UserError
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
from fwp.runs import BEST, CHECKPOINT, CONFIG, RunFolder, Training, fit
from fwp.runs.policy import learning_differences

METRICS = "metrics.json"  # the finished run's results (metrics.jsonl: the training log)
VALID_KEY = 987_654_321  # offsets data_seed for the stream protocol's validation set


@torch.no_grad()
def evaluate(model: FormalModel, language: Language, strings: list[str],
             batch_size: int = 100) -> dict[str, float]:
    """Sequence accuracy (every scored position right), position accuracy, loss; for a task
    with a no-output class (``blank``) also the answer accuracy, over the positions whose
    answer is not blank (code execution: the printed values, the public code's "print acc")."""
    was_training = model.training
    model.eval()
    blank = getattr(language, "blank", None)
    seq_ok = pos_ok = positions = answer_ok = answers = 0
    loss_sum = 0.0
    for chunk in batches(strings, batch_size):
        batch = encode(language, chunk)
        logits = model(batch.tokens)
        exact = position_correct(logits, batch) | ~batch.mask
        seq_ok += int(exact.all(-1).sum())
        pos_ok += int((exact & batch.mask).sum())
        positions += int(batch.mask.sum())
        loss_sum += float(batch_loss(logits, batch)) * int(batch.mask.sum())
        if blank is not None:
            answer = batch.mask & (batch.targets.argmax(-1) != language.classes.index(blank))
            answer_ok += int((exact & answer).sum())
            answers += int(answer.sum())
    model.train(was_training)
    out = {
        "seq_acc": 100.0 * seq_ok / len(strings),
        "pos_acc": 100.0 * pos_ok / positions,
        "loss": loss_sum / positions,
    }
    if blank is not None:
        out["answer_acc"] = 100.0 * answer_ok / max(answers, 1)
    return out


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


# -- run folders ------------------------------------------------------------------------------


def read_config(run: Path) -> RunConfig:
    path = Path(run) / CONFIG
    if not path.exists():
        raise UserError(f"{run} is not a run folder (no {CONFIG}); train one with fwp formal train")
    return from_dict(read_file(path), str(path))


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by :func:`train`; a damaged file raises ``UserError`` naming it."""
    return runs.load_checkpoint(path, fix=FormalTraining.damaged_fix)


def load_model(run: Path) -> tuple[RunConfig, FormalModel]:
    """The config and selected model of a run folder (the latest one while it still trains)."""
    run = Path(run)
    config = read_config(run)
    if not (run / CHECKPOINT).exists():
        raise UserError(f"{run} has no {CHECKPOINT}; its training never reached a checkpoint")
    model = FormalModel(get_language(config.language), config.network)
    state = load_checkpoint(run / CHECKPOINT)
    weights = state["model"]
    if (run / METRICS).exists() and config.selection != "last":
        legacy = (state.get("best") or {}).get("model")  # checkpoints before best.pt held it
        weights = legacy if legacy is not None else load_checkpoint(run / BEST)["model"]
    model.load_state_dict(weights)
    return config, model


def config_changes(config: RunConfig, out: Path) -> list[str]:
    """Fields in which ``config`` differs from the run already in ``out`` (but ``runtime``
    ones; none if empty)."""
    path = Path(out) / CONFIG
    if not path.exists():
        return []
    return learning_differences(RunConfig, read_file(path), to_dict(config))


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


class FormalTraining(Training):
    """One language × model: AdamW on batches of strings (a permutation per epoch, or a
    stream), the model selected by ``config.selection``."""

    score, higher_is_better, tiebreak = "score", True, "tiebreak"
    resume_hint = restart_hint = ""  # re-running the same command resumes
    damaged_fix = "delete it and re-run the same command to train this run from the start"

    def __init__(self, config: RunConfig, data: DataSets, out: Path | None) -> None:
        self.config, self.data, self.out = config, data, out
        self.language = data.language
        self.model = FormalModel(self.language, config.network)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, betas=tuple(config.adam_betas),
            eps=config.adam_eps, weight_decay=config.weight_decay)
        self.stream_rng = np.random.default_rng(config.seed)
        self.history: list[dict] = []
        self.perfect_streak, self.seconds, self.last_loss = 0, 0.0, math.nan
        self.started = time.perf_counter()
        self.diverged_fix = (f"({config.language}, {config.network.model}) lower --lr (now "
                             f"{config.lr}) or set --grad-clip (now {config.grad_clip})")

    def prepare(self) -> None:
        if self.out is not None:
            (self.out / METRICS).unlink(missing_ok=True)  # an extended run is not finished
        self.source = training_batches(self.config, self.data, self.step, self.stream_rng)
        self.started = time.perf_counter() - self.seconds

    def train_step(self) -> dict[str, float]:
        batch = encode(self.language, next(self.source))
        loss = batch_loss(self.model(batch.tokens), batch)
        self.last_loss = loss.item()
        if not math.isfinite(self.last_loss):  # the loop stops before anything is saved
            return {"loss": self.last_loss}
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return {"loss": self.last_loss}

    def validate(self) -> dict[str, Any]:
        score = selection_score(self.config.selection, self.model, self.config, self.data)
        self.perfect_streak = self.perfect_streak + 1 if score["score"] == 100.0 else 0
        self.history.append({"step": self.step, "train_loss": round(self.last_loss, 6),
                             **{k: v for k, v in score.items() if k != "tiebreak"},
                             "seconds": round(time.perf_counter() - self.started, 2)})
        return score

    def should_stop(self) -> bool:
        return self.perfect_streak >= self.config.stop_after_perfect > 0

    def state_dict(self) -> dict[str, Any]:
        return {"data_rng": self.stream_rng.bit_generator.state, "history": self.history,
                "perfect_streak": self.perfect_streak,
                "seconds": time.perf_counter() - self.started}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.stream_rng.bit_generator.state = checkpoint["data_rng"]
        if "torch_rng" in checkpoint:  # checkpoints before the run core kept torch's alone
            torch.set_rng_state(checkpoint["torch_rng"])
        self.history, self.perfect_streak = checkpoint["history"], checkpoint["perfect_streak"]
        self.seconds = checkpoint["seconds"]

    def validation_line(self, values: dict[str, Any], best: dict[str, Any]) -> str:
        return f"{self.config.selection} score {values['score']:.1f}%"


def train(config: RunConfig, out: Path | None = None,
          log: Callable[[str], None] | None = print,
          data_cache: Path | None = None) -> dict[str, Any]:
    """Train ``config``; with ``out``, checkpoint there and write config and metrics (without,
    in a temporary folder). Re-running the same config in ``out`` resumes from its checkpoint,
    or returns the metrics when it finished.

    Returns the metrics: per-bin ``seq_acc``/``pos_acc``/``loss`` of the selected model under
    ``"bins"``, ``"selection"`` (rule, step, score), the ``history``, ``steps_run``,
    ``train_seconds``, ``runtime`` (device, threads, torch, operator path). ``data_cache``: a
    folder for the fixed data sets.
    """
    config.validate()
    say = log or (lambda _msg: None)
    if out is None:
        with tempfile.TemporaryDirectory(prefix="fwp-formal-") as folder:
            return _train(config, Path(folder), None, say, data_cache)
    return _train(config, Path(out), Path(out), say, data_cache)


def _train(config: RunConfig, folder: Path, out: Path | None, say: Callable[[str], None],
           data_cache: Path | None) -> dict[str, Any]:
    run = RunFolder(folder)
    with run.locked():
        if (finished := run.finished(METRICS, config, say)) is not None:
            return finished
        if config.threads:
            torch.set_num_threads(config.threads)
        data = load_data(config, data_cache)
        torch.manual_seed(config.seed)
        training = FormalTraining(config, data, out)
        n_params = sum(p.numel() for p in training.model.parameters())
        last_step = total_steps(config)
        say(f"{config.language} × {config.network.model}: {n_params} parameters, {last_step} "
            f"steps, selection: {config.selection}")
        summary = fit(training, run, steps=last_step, eval_every=config.eval_every,
                      log_every=config.eval_every, progress=False, tensorboard=False, say=say)
        if summary["status"] == "interrupted":
            raise RunStopped(f"{folder}: stopped at step {summary['step']} with its checkpoint "
                             f"saved; the same command resumes it", summary["signal"])
        metrics = _final_metrics(training, run, summary, n_params)
        if out is not None:
            write_atomic(folder / METRICS, metrics)
    return metrics


def _final_metrics(training: FormalTraining, run: RunFolder, summary: dict,
                   n_params: int) -> dict[str, Any]:
    """The selected model's accuracies, how it was selected, and the training's history."""
    config, model = training.config, training.model
    best = summary["best"]
    if config.selection != "last" and run.best.exists():
        model.load_state_dict(load_checkpoint(run.best)["model"])
    selected = {k: v for k, v in best.items() if k != "tiebreak"}
    return {
        "language": config.language,
        "model": config.network.model,
        "parameters": n_params,
        "steps_run": training.step,
        "train_seconds": round(time.perf_counter() - training.started, 2),
        "runtime": summary["runtime"],
        "protocol": config.protocol,
        "selection": {"rule": config.selection,
                      **(selected if config.selection != "last" else {"step": training.step})},
        "valid": evaluate(model, training.language, training.data.valid),
        "bins": evaluate_bins(model, config, config.bins, training.data),
        "history": training.history,
    }
