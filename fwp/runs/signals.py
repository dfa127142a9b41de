"""Stopping a run cleanly: the first SIGINT (Ctrl-C) or SIGTERM (what ``kill`` and job
schedulers send) asks the loop to finish its step, save and stop; a second one stops at once."""

from __future__ import annotations

import signal
from typing import Any

SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class StopRequest:
    """A context in which SIGINT and SIGTERM set ``requested`` instead of ending the process;
    the previous handlers come back on leaving it (a caller keeps its own behaviour)."""

    def __init__(self, say: Any = print) -> None:
        self.requested = False
        self.signum: int | None = None  # the signal that asked
        self._say = say
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for signum in SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave the signals as they are
                break
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        self._say(f"\nfwp: {SIGNALS[signum]}: stopping after this step and saving a checkpoint "
                  f"(again to abort)")

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
