"""Running ``fwp`` in a child process under injected faults: a cap on the size of any file it
writes (``RLIMIT_FSIZE``: a write past it fails with EFBIG, as a full disk fails with ENOSPC),
or a signal once a given line has been printed."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fwp(*argv: str, max_file_bytes: int | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m fwp ARGV`` with this checkout first on the path, one thread, no progress bar
    colours; with ``max_file_bytes`` no file it writes can grow past that many bytes."""

    def limit() -> None:
        if max_file_bytes is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fwp", *argv], env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one ``fwp: error: ...`` line of a failed command (asserts there is no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("fwp: error: ")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]
