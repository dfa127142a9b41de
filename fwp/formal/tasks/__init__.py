"""Algorithmic sequence tasks in the formal-language workflow: code execution, sequential
ListOps and associative recall (see :mod:`fwp.formal.tasks.base`)."""

from __future__ import annotations

import re
from collections.abc import Callable

from fwp.errors import UserError
from fwp.formal.tasks.base import TokenTask, parse_options
from fwp.formal.tasks.code_execution import CodeExecution
from fwp.formal.tasks.listops import ListOps
from fwp.formal.tasks.recall import Recall

TASKS: dict[str, TokenTask] = {
    task.name: task
    for task in [CodeExecution(3), CodeExecution(5), ListOps(), Recall(), Recall(queries=0)]
}
"""The registered tasks in their paper settings; other settings are ``NAME:KEY=VALUE,…``."""

_RECALL_OPTIONS = {"keys": (1, 100_000), "values": (2, 100_000), "queries": (0, 100_000)}
FAMILIES: dict[str, tuple[Callable[..., TokenTask], dict[str, tuple[int, int]]]] = {
    "code-exec": (CodeExecution, {"variables": (1, 10)}),
    "listops": (ListOps, {}),
    "recall": (Recall, _RECALL_OPTIONS),
    "mqar": (lambda **options: Recall(**{"queries": 0, **options}), _RECALL_OPTIONS),
}
"""Task families → (factory, integer options with their ranges)."""


def get_task(name: str) -> TokenTask | None:
    """The task called ``name`` (``code-exec-5``, ``code-exec:variables=4``,
    ``recall:keys=64,values=8``, …), or None if ``name`` names no task. A malformed option is a
    UserError that says which and how to write it."""
    if name in TASKS:
        return TASKS[name]
    numbered = re.fullmatch(r"code-exec-(\d+)", name)
    if numbered:
        name = f"code-exec:variables={numbered.group(1)}"
    base, colon, text = name.partition(":")
    if colon and base in TASKS and base not in FAMILIES:
        family = base.rsplit("-", 1)[0]
        raise UserError(f"task {base!r} is a fixed setting and takes no options; write "
                        f"{family}:KEY=VALUE,… instead (e.g. code-exec:variables=4)")
    if not colon or base not in FAMILIES:
        return None
    factory, allowed = FAMILIES[base]
    return factory(**parse_options(base, text, allowed))


__all__ = ["TASKS", "CodeExecution", "ListOps", "Recall", "TokenTask", "get_task"]
