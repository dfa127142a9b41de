"""Training and testing of one time-series run, through the run core's loop (:mod:`fwp.runs`).

A run folder holds ``config.json``, ``checkpoint.pt`` (every ``eval_every`` epochs),
``best.pt`` (best validation accuracy so far), ``metrics.jsonl`` and, once finished,
``metrics.json``: the selected model's test and validation accuracy (and AUROC for two
classes, the paper's PhysioNet measure), its parameters, wall time and seconds per epoch.
Re-running the same command resumes, or does nothing when the run has finished.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from fwp.config import write_atomic
from fwp.errors import RunStopped
from fwp.runs import RunFolder, Training, fit, load_checkpoint
from fwp.series.config import RunConfig
from fwp.series.data import Prepared, load, prepare
from fwp.series.model import SeriesClassifier

METRICS = "metrics.json"


def prepared_data(config: RunConfig) -> Prepared:
    fill_with = "hold" if config.interpolation == "hold" else "linear"
    raw = load(config.dataset, config.data_root or None, config.data_options)
    return prepare(raw, config.drop, fill_with, config.data_seed)


def build_model(config: RunConfig, data: Prepared) -> SeriesClassifier:
    return SeriesClassifier(data.values.shape[-1], len(data.classes), config.model,
                            config.layers, config.d_model, config.heads, config.d_ff,
                            config.dropout, config.layer_options())


@torch.no_grad()
def evaluate(model: SeriesClassifier, data: Prepared, split: str,
             batch_size: int = 256) -> dict[str, float]:
    """Accuracy (%), mean cross-entropy and, for two classes, AUROC of ``split``."""
    was_training = model.training
    model.eval()
    index = data.splits[split]
    logits = torch.cat([model(*data.batch(part)[:3]) for part in index.split(batch_size)])
    labels = data.labels[index]
    model.train(was_training)
    result = {"accuracy": 100.0 * (logits.argmax(-1) == labels).float().mean().item(),
              "loss": F.cross_entropy(logits, labels).item()}
    if logits.shape[-1] == 2:
        result["auroc"] = auroc(logits[:, 1] - logits[:, 0], labels)
    return result


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve: the chance that a positive outranks a negative (ties ½)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    greater = (pos[:, None] > neg[None, :]).double().mean()
    ties = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * ties)


class SeriesTraining(Training):
    """Adam on shuffled batches of the training split; best validation accuracy kept."""

    score, higher_is_better, tiebreak = "accuracy", True, "loss"
    resume_hint = restart_hint = ""  # re-running the same command resumes
    damaged_fix = "delete it and re-run the same command to train this run from the start"

    def __init__(self, config: RunConfig, data: Prepared) -> None:
        self.config, self.data = config, data
        self.model = build_model(config, data)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.steps_per_epoch = math.ceil(len(data.splits["train"]) / config.batch_size)
        self.seconds = 0.0
        self.started = time.perf_counter()

    def prepare(self) -> None:
        self.started = time.perf_counter() - self.seconds

    def batch_index(self) -> torch.Tensor:
        """The series of this step: a permutation per epoch, seeded by (seed, epoch), so a
        resumed run continues the same order without saving it."""
        epoch, position = divmod(self.step, self.steps_per_epoch)
        g = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        train = self.data.splits["train"]
        order = train[torch.randperm(len(train), generator=g)]
        size = self.config.batch_size
        return order[position * size:(position + 1) * size]

    def train_step(self) -> dict[str, float]:
        values, observed, lengths, labels = self.data.batch(self.batch_index())
        loss = F.cross_entropy(self.model(values, observed, lengths), labels)
        if not math.isfinite(loss.item()):  # the loop stops before anything is saved
            return {"loss": loss.item()}
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return {"loss": loss.item()}

    def validate(self) -> dict[str, float]:
        return evaluate(self.model, self.data, "valid")

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": time.perf_counter() - self.started}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.seconds = checkpoint["seconds"]

    def validation_line(self, values: dict[str, float], best: dict[str, Any]) -> str:
        return f"val accuracy {values['accuracy']:.1f}% (best {best.get('accuracy', 0):.1f}%)"


def train(config: RunConfig, out: Path | None = None,
          log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Train ``config`` into ``out`` (a temporary folder without one) and test the selected
    model; returns (and in ``out`` writes) the metrics of the module doc."""
    config.validate()
    say = log or (lambda _msg: None)
    if out is None:
        with tempfile.TemporaryDirectory(prefix="fwp-series-") as folder:
            return _train(config, Path(folder), say, keep=False)
    return _train(config, Path(out), say, keep=True)


def _train(config: RunConfig, folder: Path, say: Callable[[str], None],
           keep: bool) -> dict[str, Any]:
    run = RunFolder(folder)
    with run.locked():
        if (finished := run.finished(METRICS, config, say)) is not None:
            return finished
        if config.threads:
            torch.set_num_threads(config.threads)
        data = prepared_data(config)
        torch.manual_seed(config.seed)
        training = SeriesTraining(config, data)
        n_params = sum(p.numel() for p in training.model.parameters())
        steps = config.epochs * training.steps_per_epoch
        say(f"{config.dataset} (drop {config.drop:g}) × {config.model}: {n_params} parameters, "
            f"{config.epochs} epochs of {training.steps_per_epoch} steps")
        summary = fit(training, run, steps=steps,
                      eval_every=config.eval_every * training.steps_per_epoch,
                      log_every=training.steps_per_epoch, progress=False, tensorboard=False,
                      say=say)
        if summary["status"] == "interrupted":
            raise RunStopped(f"{folder}: stopped at step {summary['step']} with its checkpoint "
                             f"saved; the same command resumes it", summary["signal"])
        seconds = time.perf_counter() - training.started
        if run.best.exists():
            training.model.load_state_dict(load_checkpoint(run.best)["model"])
        metrics = {
            "dataset": config.dataset, "drop": config.drop, "model": config.model,
            "seed": config.seed, "parameters": n_params, "epochs": config.epochs,
            "train_seconds": round(seconds, 2),
            "seconds_per_epoch": round(seconds / config.epochs, 3),
            "best_step": summary["best"].get("step"),
            "valid": evaluate(training.model, data, "valid"),
            "test": evaluate(training.model, data, "test"),
            "runtime": summary["runtime"],
        }
        if keep:
            write_atomic(folder / METRICS, metrics)
    return metrics
