"""``metrics.jsonl``, TensorBoard and the progress of a training run.

One JSON object per line: ``{"step", "split", ...values}`` with ``split`` "train" (means over
the steps since the last line), "val" (a validation), or another kind of record ("runtime":
threads, operator paths). A resumed run first drops the rows logged after its checkpoint's
step (a kill between a log line and the next save would otherwise log those steps twice).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from fwp.config import WriteFailed, write_atomic, write_failure
from fwp.runs.folder import METRICS, TENSORBOARD


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the rows of ``path`` up to ``step`` (the checkpoint's); a torn last line goes too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("step", step + 1) <= step:
            kept.append(line + "\n")
    write_atomic(path, "".join(kept))


def read_metrics(path: Path, split: str | None = None) -> list[dict[str, Any]]:
    """The rows of a metrics log (of one ``split``), skipping a line cut by a stop."""
    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and (split is None or row.get("split") == split):
            rows.append(row)
    return rows


def duration(seconds: float) -> str:
    """``1h05m`` or ``4m07s``."""
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class MetricsLog:
    """The run's metrics: ``metrics.jsonl`` (always), TensorBoard (when installed and wanted)
    and the progress (a bar on a terminal; elsewhere, or without ``progress``, one plain line
    per validation through ``say``). Only ``enabled`` (rank 0) writes. ``instant`` values are
    logged as the last step's, the others as means over the window since the last line."""

    def __init__(self, folder: Path, *, step: int, total: int, log_every: int,
                 enabled: bool = True, progress: bool = True, tensorboard: bool = True,
                 instant: tuple[str, ...] = ("lr", "grad_norm"),
                 say: Callable[[str], None] = print) -> None:
        self.enabled, self.total, self.log_every = enabled, total, log_every
        self.instant, self.say = instant, say
        self.first_step, self.created = step, time.perf_counter()  # for the time left
        self.path = Path(folder) / METRICS
        self.writer = self.bar = None
        self.last_train: dict[str, float] = {}
        self._reset()
        if not enabled:
            return
        truncate_metrics(self.path, step)
        self.file = self.path.open("a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(folder) / TENSORBOARD),
                                            purge_step=step + 1 if step else None)
            except ImportError:
                self.writer = None
        if progress and sys.stderr.isatty():  # a bar in a log file is a line of \r updates
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=step, desc=Path(folder).name,
                            dynamic_ncols=True, unit="step")

    def _reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.latest: dict[str, float] = {}
        self.n, self.started = 0, time.perf_counter()

    def means(self) -> dict[str, float]:
        """The window's values (means, ``instant`` ones last) and ``steps_per_s``."""
        if not self.n:
            return dict(self.last_train)
        values = {k: (self.latest[k] if k in self.instant else v / self.n)
                  for k, v in self.sums.items()}
        values["steps_per_s"] = self.n / max(time.perf_counter() - self.started, 1e-9)
        return values

    def step(self, step: int, values: dict[str, float], last_step: int) -> None:
        """Count optimiser step ``step``; write the window every ``log_every`` steps and at
        ``last_step``."""
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.latest = values
        self.n += 1
        if self.bar is not None:
            self.bar.update(1)
        if step % self.log_every and step != last_step:
            return
        means = self.means()
        self.log(step, "train", means)
        self.last_train = means
        if self.bar is not None:
            shown = {k: f"{means[k]:.3g}" for k in ("loss", "accuracy") if k in means}
            self.bar.set_postfix(**shown, steps_s=f"{means['steps_per_s']:.2f}")
        self._reset()

    def validation(self, step: int, values: dict[str, float], line: str,
                   train_line: Callable[[dict[str, float]], str]) -> None:
        """Log a validation and show ``line`` (with the training so far, ``train_line``)."""
        self.log(step, "val", values)
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(f"step {step}: {line}")
            return
        train = self.means()
        speed = f", {train['steps_per_s']:.2f} steps/s" if "steps_per_s" in train else ""
        self.say(f"step {step}/{self.total}: {train_line(train)}{speed}; {line}{self.left(step)}")

    def left(self, step: int) -> str:
        """``; about 1h05m left``: the steps to go at this call's wall time per step so far
        (validations included); empty at the end."""
        done = step - self.first_step
        if step >= self.total or done <= 0:
            return ""
        per_step = (time.perf_counter() - self.created) / done
        return f"; about {duration(per_step * (self.total - step))} left"

    def _write(self, row: dict[str, Any]) -> None:
        try:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
        except OSError as error:
            raise WriteFailed(write_failure(self.path, error)) from None

    def record(self, step: int, kind: str, info: dict[str, Any]) -> None:
        """A row that is not a scalar series (``kind`` "runtime": threads, operators ...)."""
        if self.enabled:
            self._write({"step": step, "split": kind, **info})

    def log(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._write({"step": step, "split": split, **values})
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.enabled:
            with suppress(OSError):  # a full disk was reported where it happened
                self.file.close()
            if self.writer is not None:
                self.writer.close()
