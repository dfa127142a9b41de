"""Loads the fused CPU kernels of ``fwp/csrc``, compiling them on first use.

``torch.utils.cpp_extension`` builds the C++ sources with this machine's compiler and ninja. The
package therefore needs no build step, and no torch at build time: the first use compiles (about
half a minute, announced on stderr), later uses and processes load the cached library.

The cache folder is named by a hash of everything that changes the binary: the sources, the
compiler flags, the compiler and its version, torch's version and C++ ABI, the Python ABI and the
CPU's instruction-set flags (the code is compiled with ``-march=native``). Two checkouts or two
environments on one machine therefore share a build when they would produce the same one, and
keep their own builds side by side when they would not; nothing is rebuilt on a switch. The
sources are copied into the folder and compiled from there, so the build does not depend on where
the checkout lives. Root: ``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``.

A Ctrl-C during the build stops the program (``KeyboardInterrupt``) instead of being taken for a
failed build: a run never moves to the slower PyTorch path because it was interrupted.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from fwp.errors import UserError
from fwp.ops._compile_marks import constant_for_compile

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
NAME = "fwp_fused_cpu"
DONE = "built.json"  # written last: a folder without it holds no usable build

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


def _compiler_version(compiler: str) -> str:
    try:
        result = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                                timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error})"
    return (result.stdout or result.stderr).strip().splitlines()[0] if result.returncode == 0 \
        else f"exit {result.returncode}"


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


def build_inputs(compiler: str) -> dict[str, str]:
    """Everything the compiled library depends on, by name (the cache key is their hash)."""
    import torch

    sources = hashlib.sha256()
    for name in SOURCES + HEADERS:
        sources.update(name.encode() + b"\0" + (CSRC / name).read_bytes() + b"\0")
    return {
        "sources": sources.hexdigest()[:16],
        "cflags": " ".join(CFLAGS),
        "compiler": f"{compiler}: {_compiler_version(compiler)}",
        "torch": f"{torch.__version__} ({torch.version.git_version}), "
                 f"cxx11 abi {int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        "python": f"{sys.implementation.cache_tag} {sysconfig.get_config_var('SOABI')}",
        "cpu": _cpu_tag(),
    }


def cache_root() -> Path:
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or "~/.cache/torch_extensions").expanduser()


def build_dir(inputs: dict[str, str]) -> Path:
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "fwp" / f"fused_cpu_{key}"


def _library(folder: Path) -> Path:
    return folder / f"{NAME}.so"


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """One builder per folder at a time. The lock dies with its process (kill -9 included), so
    torch's own lock file found inside it is stale and removed."""
    with (folder / "fwp.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            (folder / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _interrupt_stops() -> Iterator[list[bool]]:
    """During the build, Ctrl-C raises ``KeyboardInterrupt`` even where a caller installed a
    softer SIGINT handler (training's "finish the step and save"), and is recorded: the compiler
    dies of the same signal, and that failure must not read as "the kernels cannot be built"."""
    seen = [False]
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def handler(signum: int, frame: object) -> None:
        seen[0] = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


def _compile(folder: Path, inputs: dict[str, str]) -> None:
    """Compile the sources copied into ``folder/src`` and load the library (raises on failure)."""
    from torch.utils import cpp_extension

    src = folder / "src"
    src.mkdir(exist_ok=True)
    for name in SOURCES + HEADERS:
        shutil.copyfile(CSRC / name, src / name)
    print(f"fwp: compiling the CPU kernels (once, 30–80 s) into {folder}", file=sys.stderr,
          flush=True)
    start = time.perf_counter()
    with _interrupt_stops() as interrupted:
        try:
            cpp_extension.load(
                name=NAME,
                sources=[str(src / name) for name in SOURCES],
                extra_cflags=list(CFLAGS),
                extra_include_paths=[str(src)],
                build_directory=str(folder),
                is_python_module=False,
                verbose=False,
            )
        except Exception:
            if interrupted[0]:
                raise KeyboardInterrupt from None
            raise
    (folder / DONE).write_text(json.dumps(inputs, indent=2) + "\n")
    print(f"fwp: compiled the CPU kernels in {time.perf_counter() - start:.0f} s",
          file=sys.stderr, flush=True)


def build() -> tuple[object | None, str]:
    """Load the cached build of the kernels, compiling it first if there is none:
    ``(torch.ops.fwp, "")``, or ``(None, why)``.

    The library registers its operators with torch (``torch.ops.fwp.srwm_forward`` ...), which
    spares it the Python binding headers and halves the compile time. ``KeyboardInterrupt``
    passes through.
    """
    compiler = _compiler()
    if compiler is None:
        return None, (
            f"no C++ compiler found (looked for {os.environ.get('CXX', 'c++')!r} on the PATH; "
            f"set $CXX or install g++ / clang++)"
        )
    missing = [name for name in SOURCES + HEADERS if not (CSRC / name).is_file()]
    if missing:
        return None, f"the C++ sources {missing} are missing from {CSRC}: reinstall fwp"
    import torch

    inputs = build_inputs(compiler)
    folder = build_dir(inputs)
    if not (folder / DONE).is_file():
        if not _find_ninja():
            return None, "the ninja build tool is missing: `pip install ninja`"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with _exclusive(folder):
                if not (folder / DONE).is_file():  # another process may have built it meanwhile
                    _compile(folder, inputs)
        except OSError as error:
            return None, f"cannot write the build folder {folder}: {error}"
        except Exception as err:  # noqa: BLE001 — any build failure means "unavailable, here is why"
            detail = str(err).strip().splitlines()
            return None, "compiling fwp/csrc failed: " + " | ".join(detail[-6:])
    if not hasattr(torch.ops.fwp, "srwm_forward"):
        try:
            torch.ops.load_library(str(_library(folder)))
        except OSError as error:
            return None, (f"cannot load {_library(folder)} ({error}); delete {folder} to have "
                          f"it rebuilt")
    return torch.ops.fwp, ""


@functools.cache
def _loaded() -> tuple[object | None, str]:
    return build()


@constant_for_compile
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
