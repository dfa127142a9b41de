"""What ``fwp fewshot train --resume`` may change, and how each change is applied.

A resumed run continues the checkpoint's model, optimiser and episode stream. Flags given on
resume may change how long, how fast and how it trains and logs (:data:`ALLOWED`); they are
applied to the run (the optimiser's rate included) and printed as ``changed on resume: ...``.
Every other field shapes the model, the episodes or the loss the checkpoint was trained with,
and a change of it is refused before anything is written. ``config.json`` is rewritten only
once every check has passed, so it always says what the run does.
"""

from __future__ import annotations

from typing import Any

from fwp.errors import UserError

# (section, field) of the fields a resume may change; "" is the top level.
ALLOWED = {
    ("", "steps"), ("", "eval_every"), ("", "val_episodes"), ("", "log_every"), ("", "device"),
    ("", "amp"), ("", "threads"), ("", "test_episodes"), ("", "test_repeats"),
    ("optim", "lr"), ("optim", "schedule"), ("optim", "warmup"), ("optim", "grad_clip"),
    ("optim", "weight_decay"), ("optim", "adam_beta1"), ("optim", "adam_beta2"),
    ("optim", "adam_eps"), ("network", "core_mode"), ("data", "data_root"),
}


def _leaves(data: dict, section: str = "") -> dict[tuple[str, str], Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and not section:
            out.update(_leaves(value, key))
        else:
            out[(section, key)] = value
    return out


def _name(key: tuple[str, str]) -> str:
    return key[1]


def differences(before: dict, after: dict) -> dict[tuple[str, str], tuple[Any, Any]]:
    """``{(section, field): (before, after)}`` of the leaves that differ (a field missing from
    ``before``, one added to the config since, counts as unchanged)."""
    old, new = _leaves(before), _leaves(after)
    return {key: (old[key], new[key]) for key in new if key in old and old[key] != new[key]}


def check_changes(before: dict, after: dict, where: str) -> list[str]:
    """The allowed changes from ``before`` (the checkpoint's config) to ``after`` as
    ``["lr 0.003 → 1e-05", ...]``; raises ``UserError`` naming every refused one."""
    changed = differences(before, after)
    refused = [f"--{_name(k).replace('_', '-')} {a!r} → {b!r}" for k, (a, b) in changed.items()
               if k not in ALLOWED]
    if refused:
        raise UserError(
            f"cannot change {', '.join(refused)} on resume: the checkpoint {where} was trained "
            f"with the old value(s) (only the schedule, rate, steps, logging and where it runs "
            f"may change); drop the flag(s), or start a new run with another --out"
        )
    return [f"{_name(k)} {a!r} → {b!r}" for k, (a, b) in changed.items()]


def kept_over_files(saved: dict, files: dict, flags: dict) -> list[str]:
    """Fields where a ``--preset`` / ``--config`` re-typed on resume differs from the run's own
    config and no flag was given: the run keeps its value (``["steps 2 (file: 1000)"]``)."""
    given = _leaves(flags)
    return [f"{_name(k)} {a!r} (not {b!r})" for k, (a, b) in differences(saved, files).items()
            if k not in given]
