"""A few-shot run folder (:class:`fwp.runs.RunFolder`) read back: its config and trained model.

``RUN/config.json``, ``checkpoint.pt``, ``best.pt``, ``metrics.jsonl``, ``tb/``: see
:mod:`fwp.runs.folder`; the checkpoints also hold the episode sampler's position and the image
shape. ``RUN/eval_<split>.json``: accuracies per K_test written by ``fwp fewshot eval``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fwp.config import read_file, to_dict
from fwp.errors import UserError
from fwp.fewshot.config import RunConfig, from_dict
from fwp.runs import BEST, CHECKPOINT, CONFIG, METRICS, load_checkpoint
from fwp.runs.policy import policies

__all__ = ["BEST", "CHECKPOINT", "CONFIG", "METRICS", "check_matches", "load_checkpoint",
           "load_state", "read_config"]


def read_config(run: Path) -> RunConfig:
    if not run.is_dir():
        raise UserError(
            f"run folder {run} does not exist; train one with `fwp fewshot train --out {run}`"
        )
    path = run / CONFIG
    if not path.is_file():
        raise UserError(f"{run} is not a run folder: it has no {CONFIG}")
    return from_dict(read_file(path), str(path))


def check_matches(checkpoint: dict, config: RunConfig, path: Path) -> None:
    """Raise unless the checkpoint was trained with the config's model and episode shape: the
    network fields a resume must match, and N."""
    saved = checkpoint.get("config", {})
    current, defaults = to_dict(config), to_dict(RunConfig())
    shaping = [p[-1] for p, (rule, _) in policies(RunConfig).items()
               if p[0] == "network" and rule == "match"]
    # A field the checkpoint's config predates has its default value there.
    differ = [
        f"{key}: checkpoint {before!r}, config {current['network'][key]!r}"
        for key in shaping
        if "network" in saved
        and (before := saved["network"].get(key, defaults["network"][key]))
        != current["network"][key]
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
