"""Loads the fused CPU kernels of ``fwp/csrc``, compiling them on first use.

``torch.utils.cpp_extension.load`` builds the C++ sources with this machine's compiler and ninja
and caches the library under the torch extensions directory (``$TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``). The package therefore needs no build step, and no torch at build
time: the first call compiles (about half a minute), later calls and processes reuse the library.

The code is compiled for this CPU (``-march=native``), so the library's name carries a hash of the
CPU's instruction-set flags: machines sharing a home directory never load each other's builds.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import sys
from pathlib import Path

from fwp.errors import UserError

CSRC = Path(__file__).resolve().parent.parent / "csrc"
SOURCES = ("ops.cpp", "srwm_cpu.cpp", "delta_rule_cpu.cpp")
HEADERS = ("fused_cpu.h", "kernels.h")
# No -ffast-math: results stay IEEE. Dropping FP traps and errno lets loops with comparisons
# and floor() vectorise (the code reads neither); without loop-distribute-patterns the copies of
# a few dozen floats per step stay inline instead of becoming calls to memmove.
CFLAGS = (
    "-O3", "-march=native", "-fopenmp", "-fno-trapping-math", "-fno-math-errno",
    "-fno-tree-loop-distribute-patterns",
)

log = logging.getLogger(__name__)


def _cpu_tag() -> str:
    """Hash of the CPU's feature flags (Linux), or of the machine type elsewhere."""
    flags = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags += line
                break
    except OSError:
        pass
    return hashlib.sha1(flags.encode()).hexdigest()[:10]


def _compiler() -> str | None:
    """The C++ compiler torch would use: ``$CXX``, else ``c++`` on the PATH."""
    return shutil.which(os.environ.get("CXX", "c++"))


def _find_ninja() -> bool:
    """Whether torch will find ``ninja``: on the PATH, or else from the ``ninja`` pip package,
    whose script sits next to the interpreter of an environment that was never activated."""
    if shutil.which("ninja"):
        return True
    candidates = [str(Path(sys.executable).parent)]
    try:
        import ninja

        candidates.insert(0, ninja.BIN_DIR)
    except (ImportError, AttributeError):
        pass
    for folder in candidates:
        if shutil.which("ninja", path=folder):
            os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")
            return True
    return False


def build() -> tuple[object | None, str]:
    """Compile (or load the cached build of) the kernels: ``(torch.ops.fwp, "")``, or
    ``(None, why)``.

    The library registers its operators with torch (``torch.ops.fwp.srwm_forward`` ...), which
    spares it the Python binding headers and halves the compile time.
    """
    if _compiler() is None:
        return None, (
            f"no C++ compiler found (looked for {os.environ.get('CXX', 'c++')!r} on the PATH; "
            f"set $CXX or install g++ / clang++)"
        )
    if not _find_ninja():
        return None, "the ninja build tool is missing: `pip install ninja`"
    from torch.utils import cpp_extension

    missing = [name for name in SOURCES + HEADERS if not (CSRC / name).is_file()]
    if missing:
        return None, f"the C++ sources {missing} are missing from {CSRC}: reinstall fwp"
    log.info("compiling fwp's fused CPU kernels (once per machine; cached by torch)")
    try:
        cpp_extension.load(
            name=f"fwp_fused_cpu_{_cpu_tag()}",
            sources=[str(CSRC / name) for name in SOURCES],
            extra_cflags=list(CFLAGS),
            extra_include_paths=[str(CSRC)],
            is_python_module=False,
            verbose=False,
        )
    except Exception as err:  # noqa: BLE001 — any build failure means "unavailable, here is why"
        detail = str(err).strip().splitlines()
        return None, "compiling fwp/csrc failed: " + " | ".join(detail[-6:])
    import torch

    return torch.ops.fwp, ""


@functools.cache
def _loaded() -> tuple[object | None, str]:
    return build()


def available() -> tuple[bool, str]:
    """``(True, "")`` if the fused CPU kernels load (compiling them if needed), else
    ``(False, why)``."""
    module, reason = _loaded()
    return module is not None, reason


def extension():  # noqa: ANN201 — torch.ops namespace
    """The operators ``torch.ops.fwp``; raises :class:`UserError` saying why if they cannot be
    built."""
    module, reason = _loaded()
    if module is None:
        raise UserError(f"the fused CPU kernels (mode 'fused_cpu') are unavailable: {reason}")
    return module
