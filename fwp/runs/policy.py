"""What a resumed run may change: the policy each config field declares once, applied.

Every leaf of a workflow's config schema says in :func:`fwp.config.option` (``resume=``) what a
run continued from its checkpoint may do with it:

``match``     (the default) it shapes the model, the data or the loss the checkpoint was trained
              with: a change is refused before anything is written;
``announce``  how long, how fast, how it logs (steps, learning rate, schedule): the change is
              applied and printed as ``changed on resume: ...``;
``runtime``   how the run is executed, not what it computes (threads, device): it may change,
              and a sweep comparing a run folder with its grid ignores it.

A field missing from a saved config (one added to the schema since) counts as unchanged, so
older run folders still resume.
"""

from __future__ import annotations

from typing import Any

from fwp.config import flag_of, leaves
from fwp.errors import UserError


def policies(cls: type) -> dict[tuple[str, ...], tuple[str, str]]:
    """Path of each leaf of schema ``cls`` → (its policy, its flag)."""
    return {path: (f.metadata.get("resume", "match"), flag_of(f)) for path, f, _ in leaves(cls)}


def _value(data: dict, path: tuple[str, ...]) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return False, None
        data = data[key]
    return True, data


def differences(cls: type, before: dict, after: dict) -> dict[tuple[str, ...], tuple[Any, Any]]:
    """``{path: (before, after)}`` of the leaves that differ (missing in ``before``: unchanged)."""
    out = {}
    for path in policies(cls):
        known, old = _value(before, path)
        _, new = _value(after, path)
        if known and old != new:
            out[path] = (old, new)
    return out


def resume_changes(cls: type, before: dict, after: dict, where: str) -> list[str]:
    """The changes from ``before`` (the checkpoint's config) to ``after`` that the policy lets
    a resumed run make, as ``["lr 0.003 → 1e-05", ...]``; raises :class:`UserError` naming
    every refused one (``where``: the checkpoint or folder, for the message)."""
    rules = policies(cls)
    changed = differences(cls, before, after)
    refused = [f"--{rules[p][1]} {a!r} → {b!r}" for p, (a, b) in changed.items()
               if rules[p][0] == "match"]
    if refused:
        free = sorted({rules[p][1] for p in rules if rules[p][0] != "match"})
        raise UserError(
            f"cannot change {', '.join(refused)} on resume: {where} was trained with the old "
            f"value(s) (only {', '.join(free)} may change); drop the flag(s), or start a new run "
            f"with another --out"
        )
    return [f"{p[-1]} {a!r} → {b!r}" for p, (a, b) in changed.items()]


def learning_differences(cls: type, before: dict, after: dict) -> list[str]:
    """``field: before → after`` for each field that differs but ``runtime`` ones: two configs
    with none train the same run (a sweep's test of a run folder against its grid)."""
    rules = policies(cls)
    return [f"{p[-1]}: {a!r} → {b!r}" for p, (a, b) in differences(cls, before, after).items()
            if rules[p][0] != "runtime"]


def kept_over_files(cls: type, saved: dict, files: dict, flags: dict) -> list[str]:
    """Fields where a preset or config file typed again on resume differs from the run's own
    config and no flag was given: the run keeps its value (``["steps 2 (not 1000)"]``)."""
    return [f"{p[-1]} {a!r} (not {b!r})" for p, (a, b) in differences(cls, saved, files).items()
            if not _value(flags, p)[0]]
