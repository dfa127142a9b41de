"""The run folder: its files, the checks of an output path, and the one-writer lock.

``RUN/config.json``    the resolved config of the run
``RUN/checkpoint.pt``  the last state (:mod:`fwp.runs.checkpoint`), rewritten atomically
``RUN/best.pt``        the model with the best validation score so far
``RUN/metrics.jsonl``  one JSON object per logged step / validation (:mod:`fwp.runs.metrics`)
``RUN/tb/``            TensorBoard events (when TensorBoard is installed)
``RUN/.lock``          held (``fcntl.flock``) by the one process that writes the folder; the
                       kernel drops the lock when that process ends, killed or not
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fwp.config import read_file, write_atomic
from fwp.errors import UserError

CONFIG, CHECKPOINT, BEST, METRICS = "config.json", "checkpoint.pt", "best.pt", "metrics.jsonl"
TENSORBOARD, LOCK = "tb", ".lock"


def check_output_path(path: Path, flag: str = "--out", folder: bool = True) -> None:
    """Raise :class:`UserError` unless ``path`` can become (or is) a writable folder (a file
    with ``folder=False``): not a file where a folder is wanted, not under a file, not a
    dangling symbolic link, valid UTF-8, and in a writable place. Reads only."""
    path = Path(path)
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"{flag} {text!r} is not valid UTF-8 (TensorBoard and the JSON files "
                        f"need it); choose a name in UTF-8") from None
    if path.is_symlink() and not path.exists():
        raise UserError(f"{flag} {path} is a symbolic link to {os.readlink(path)}, which does "
                        f"not exist; create its target or choose another {flag}")
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder; choose another {flag}")
    if not folder and path.is_dir():
        raise UserError(f"{flag} {path} is a folder, not a file; choose another {flag}")
    existing = path if folder and path.exists() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {path} lies under {existing}, which is a file, not a folder; "
                        f"choose another {flag}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {existing} is not writable (read-only); fix its "
                        f"permissions or choose another {flag}")


class RunFolder:
    """A run's folder: the paths of its files, the lock and the writing of its config."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock: int | None = None
        self._created: Path | None = None  # the topmost folder this process created

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    def has_checkpoint(self) -> bool:
        return self.checkpoint.is_file()

    def check_resume(self, resume: bool) -> None:
        """For a workflow that resumes on request (``--resume``): a checkpoint exactly when
        resuming. Reads only."""
        if resume and not self.has_checkpoint():
            stopped = (" (its run stopped before the first checkpoint: start it again without "
                       "--resume)" if self.config_path.is_file() else "")
            raise UserError(f"cannot resume: {self.checkpoint} does not exist{stopped}")
        if not resume and self.has_checkpoint():
            raise UserError(f"{self.path} already holds a run; pass --resume to continue it, "
                            f"or choose another --out")

    def read_config(self) -> dict:
        """The saved config as a dict (``read_file``'s errors for a damaged one)."""
        return read_file(self.config_path)

    @contextlib.contextmanager
    def locked(self, what: str = "run", hold: bool = True) -> Iterator[RunFolder]:
        """Hold the folder's lock for the block: a second process that opens the same folder
        is refused with one line naming the holder. The folder is created when missing and
        removed again on leaving if nothing but the lock was written into it. ``hold=False``
        (the other processes of a distributed run): only check the path."""
        if not hold:
            check_output_path(self.path)
            yield self
            return
        check_output_path(self.path)
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        self._created = missing[-1] if missing else None
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot create the {what} folder {self.path} "
                            f"({error.strerror or error}); choose another --out") from None
        try:
            self._acquire(what)
            yield self
        finally:
            self._release()
            if self._created and [p.name for p in self.path.iterdir()] in ([], [LOCK]):
                shutil.rmtree(self._created, ignore_errors=True)

    def _acquire(self, what: str) -> None:
        path = self.path / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UserError(f"cannot write {path} ({error.strerror or error}): the {what} folder "
                            f"is not writable; fix its permissions or choose another --out"
                            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _holder(fd)
            os.close(fd)
            if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise UserError(f"{self.path} is in use by another fwp process ({holder}); wait for "
                            f"it to end (or stop it), or choose another folder") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._lock = fd

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing drops the flock
            self._lock = None

    def finished(self, result: str, config: Any, say: Callable[[str], None]) -> Any:
        """The saved result file ``result`` (e.g. ``metrics.json``) of a run that finished with
        ``config`` (fields of resume policy ``runtime`` aside), or None: no result yet, or a
        config that goes on learning (more steps), whose old result is deleted so that nothing
        reads it as finished. A refused change raises :class:`UserError` before any work."""
        from fwp.config import to_dict
        from fwp.runs.policy import learning_differences, resume_changes

        path = self.path / result
        if not path.is_file():
            return None
        saved = self.read_config()
        resume_changes(type(config), saved, to_dict(config), str(self.path))
        if not learning_differences(type(config), saved, to_dict(config)):
            say(f"{self.path}: already finished")
            return read_file(path)
        path.unlink()
        return None

    def claim(self, config: dict[str, Any], fresh: bool) -> None:
        """Write ``config.json`` once every check has passed; a ``fresh`` run first clears what a
        run that never reached its first checkpoint left in the folder."""
        if fresh:
            for leftover in (METRICS, BEST):
                (self.path / leftover).unlink(missing_ok=True)
            shutil.rmtree(self.path / TENSORBOARD, ignore_errors=True)
        write_atomic(self.config_path, config)
        self._created = None  # the folder holds a run now: keep it


def _holder(fd: int) -> str:
    """``pid 123 on host, started 2026-12-03T10:00:00`` from a held lock file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError):
        return "its holder did not say who it is"
