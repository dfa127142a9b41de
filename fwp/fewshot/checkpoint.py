"""The run folder: its files, and loading a trained model back.

``RUN/config.json``   the resolved :class:`RunConfig`
``RUN/checkpoint.pt`` the last state (model, optimiser, schedule, step, RNG and episode counter)
``RUN/best.pt``       the model with the best validation accuracy so far
``RUN/metrics.jsonl`` one JSON object per logged step / validation
``RUN/tb/``           TensorBoard events
``RUN/eval_<split>.json`` accuracies per K_test written by ``fwp fewshot eval``
"""

from __future__ import annotations

from pathlib import Path

import torch

from fwp.config import read_file, to_dict
from fwp.errors import UserError, brief
from fwp.fewshot.config import RunConfig, from_dict

CONFIG, CHECKPOINT, BEST, METRICS = "config.json", "checkpoint.pt", "best.pt", "metrics.jsonl"


def read_config(run: Path) -> RunConfig:
    if not run.is_dir():
        raise UserError(
            f"run folder {run} does not exist; train one with `fwp fewshot train --out {run}`"
        )
    path = run / CONFIG
    if not path.is_file():
        raise UserError(f"{run} is not a run folder: it has no {CONFIG}")
    return from_dict(read_file(path), str(path))


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"no checkpoint {path}; train (or resume) the run first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 — any unreadable file is the same user problem
        raise UserError(
            f"cannot read checkpoint {path} ({brief(error)}): the file is damaged or not a "
            f"checkpoint; restore it, or train the run again into a new --out"
        ) from None
    if not (isinstance(state, dict) and isinstance(state.get("model"), dict)
            and isinstance(state.get("step"), int)):
        raise UserError(f"{path} is a torch file but not a checkpoint of fwp fewshot train (no "
                        "model and step); restore it, or train the run again into a new --out")
    return state


# Network fields that choose how the same parameters are computed, not what they are.
RUNTIME_FIELDS = {"core_mode"}


def check_matches(checkpoint: dict, config: RunConfig, path: Path) -> None:
    """Raise unless the checkpoint was trained with the config's model and episode shape."""
    saved = checkpoint.get("config", {})
    current, defaults = to_dict(config), to_dict(RunConfig())
    # A field the checkpoint's config predates has its default value there.
    differ = [
        f"{key}: checkpoint {before!r}, config {value!r}"
        for section in ("network",)
        for key, value in current[section].items()
        if section in saved and key not in RUNTIME_FIELDS
        and (before := saved[section].get(key, defaults[section][key])) != value
    ]
    if saved.get("data", {}).get("n_way") != config.data.n_way:
        differ.append(f"n_way: checkpoint {saved.get('data', {}).get('n_way')!r}, "
                      f"config {config.data.n_way!r}")
    if differ:
        raise UserError(
            f"checkpoint {path} does not match its config ({'; '.join(differ)}); "
            "use the run's own config.json, or train a new run"
        )


def load_state(model: torch.nn.Module, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise UserError(
            f"checkpoint {path} does not match the model of its config: "
            f"{' '.join(line.strip() for line in first[:3])}"
        ) from None
