"""Stopping a run cleanly: the first SIGINT (Ctrl-C) or SIGTERM (what ``kill`` and job
schedulers send) asks the loop to finish its step, save and stop; a second one stops at once.

A sweep's worker process has a second source: :func:`stop_when` registers a check (the sweep's
stop event), so that a sweep stopped in its parent process stops its running runs the same way,
each after its step and with its checkpoint saved, without a signal reaching the worker."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
_external: Callable[[], bool] | None = None


def stop_when(check: Callable[[], bool] | None) -> None:
    """Make every :class:`StopRequest` of this process also ask to stop once ``check()`` is
    true (None: signals only)."""
    global _external
    _external = check


def stop_asked() -> bool:
    """Whether the check of :func:`stop_when` says to stop (False when none is registered)."""
    return _external is not None and _external()


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

    def asked(self) -> bool:
        """Whether to stop after this step: a signal came, or the registered check says so
        (then said once, and counted as SIGTERM)."""
        if not self.requested and stop_asked():
            self.requested, self.signum = True, signal.SIGTERM
            self._say("\nfwp: the sweep was stopped: stopping after this step and saving a "
                      "checkpoint")
        return self.requested

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
