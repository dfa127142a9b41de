"""Every Triton kernel of fwp.ops compiles for sm_80 and sm_90 (PTX and cubin, by the ptxas in
triton's wheel) with shared memory within the target's limit: errors the interpreter, which the
other Triton tests use, cannot see. No GPU needed; :mod:`tests.ops.triton_targets` does the work
in a child process, since the interpreter (TRITON_INTERPRET=1 in ``make test``) replaces the
language functions that the compiler reads."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ptxas_shipped() -> bool:
    spec = importlib.util.find_spec("triton")
    return spec is not None and (
        Path(spec.origin).parent / "backends" / "nvidia" / "bin" / "ptxas").is_file()


def _python(args: list[str]) -> subprocess.CompletedProcess:
    """Python in a child process with triton compiling for the GPU (no interpreter)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(PYTHONPATH=str(ROOT), TRITON_DEFAULT_FP_FUSION="1")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


# The paper-sized SRWM forward needs 64 bytes of shared memory: against a limit of 32 the check
# must fail (a GPU launch would).
OVER_THE_LIMIT = """
from tests.ops import triton_targets as t
t.SHARED_LIMIT[80] = 32
t.compile_launch(t.srwm_launches()[0], 80)
"""


@pytest.mark.skipif(not _ptxas_shipped(), reason="triton (with its NVIDIA backend) not installed")
def test_a_kernel_over_the_shared_memory_limit_fails():
    done = _python(["-c", OVER_THE_LIMIT])
    assert done.returncode != 0
    assert "64 bytes of shared memory, the limit of sm_80 is 32" in done.stderr, done.stderr


@pytest.mark.slow
@pytest.mark.skipif(not _ptxas_shipped(), reason="triton (with its NVIDIA backend) not installed")
@pytest.mark.parametrize("arch", [80, 90])
def test_every_kernel_compiles_for_the_gpu(arch):
    done = _python(["-m", "tests.ops.triton_targets", "--arch", str(arch)])
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert "FAILED" not in report and " compiled" in report, report
