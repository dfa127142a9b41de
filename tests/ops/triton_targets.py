"""Compile every Triton kernel of fwp.ops for named NVIDIA GPUs, on a machine without one.

``python -m tests.ops.triton_targets [--arch 80 90]`` (triton imported WITHOUT
``TRITON_INTERPRET=1``: the interpreter replaces the language functions the compiler needs).

Each operator runs once per case on CPU tensors with the kernels' launches recorded instead of
run (:class:`fwp.ops._triton_utils.LazyKernel` is replaced), so the launches are exactly those of
a GPU run: the same arguments, block sizes, ``num_warps`` and dtypes. Each recorded launch is then
specialised by Triton's own binder for the target (what ``kernel[grid](...)`` does on a GPU) and
compiled to PTX and, by the ``ptxas`` that ships in triton's wheel, to a cubin. What this catches
and the interpreter cannot: code the GPU compiler rejects (types, layouts, ``tl.dot`` shapes),
PTX that ptxas rejects, and shared memory beyond the target's limit. ptxas' register and spill
counts are printed and returned.

Prints one line per (target, kernel, case); exits 1 if any failed (:data:`KNOWN` lists the
launches that do not fit today, with why).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fwp.ops import _triton_utils, srwm_rows

# Shared memory one block may use (bytes, opt-in maximum): A100 (sm_80) 163 KiB, H100 (sm_90)
# 227 KiB (CUDA C Programming Guide, "Features and Technical Specifications").
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}


# Launches that do not fit a target today, each with why: printed as KNOWN, not counted as
# failures, and a failure again once they compile (then remove them from here).
KNOWN: dict[tuple[str, str], str] = {}


@dataclass
class Launch:
    kernel: Callable
    case: str
    args: tuple
    kwargs: dict


def _recorded(run: Callable[[], None], case: str) -> list[Launch]:
    """The kernel launches of ``run()``, recorded instead of executed."""
    launches: list[Launch] = []

    def record(self: _triton_utils.LazyKernel, grid: tuple[int, ...]) -> Callable:
        return lambda *args, **kwargs: launches.append(Launch(self.fn, case, args, kwargs))

    original = _triton_utils.LazyKernel.__getitem__
    _triton_utils.LazyKernel.__getitem__ = record
    try:
        run()
    finally:
        _triton_utils.LazyKernel.__getitem__ = original
    return launches


def _forward_backward(apply: Callable, *inputs: torch.Tensor) -> None:
    outputs = [o for o in apply(*inputs) if isinstance(o, torch.Tensor)]
    torch.autograd.grad([o.sum() for o in outputs], inputs, allow_unused=True)


def srwm_launches() -> list[Launch]:
    """The SRWM kernels at the paper's head size (D = 16, four rates), D = 32 and 64 (the
    largest the kernels accept), shared and per-sequence W0, 32/16/64-bit inputs."""
    from fwp.ops.srwm.triton import srwm_triton_op

    launches = []
    for D, d_out, n_beta, softmax, per_sequence, dtype in [
        (16, 16, 4, False, False, torch.float32),
        (32, 32, 1, True, True, torch.bfloat16),
        (64, 64, 4, False, False, torch.float32),
        (16, 8, 1, False, True, torch.float64),
    ]:
        x = torch.randn(2, 5, 3, D, dtype=dtype, requires_grad=True)
        rows = srwm_rows(d_out, D, n_beta)
        W0 = torch.randn(*((2,) if per_sequence else ()), 3, rows, D, dtype=dtype,
                         requires_grad=True)
        case = f"D={D} d_out={d_out} n_beta={n_beta} softmax={softmax} {str(dtype)[6:]}"
        launches += _recorded(lambda x=x, W0=W0, n_beta=n_beta, softmax=softmax: (
            _forward_backward(lambda a, b: srwm_triton_op(a, b, n_beta, softmax, 1.0), x, W0)
        ), case)
    return launches


def delta_rule_launches() -> list[Launch]:
    """The delta-rule kernels, fused recurrent and chunked, at head sizes 64 and 128 (the
    largest they accept), chunks of 64 and 32, with and without an initial state."""
    from fwp.ops.delta_rule.triton import delta_rule_triton_op

    launches = []
    for K, V, chunk, with_state, dtype in [
        (64, 64, None, False, torch.float32),
        (128, 128, None, True, torch.bfloat16),
        (64, 64, 64, True, torch.float32),
        (128, 128, 64, False, torch.float32),
        (128, 128, 64, False, torch.bfloat16),
        (32, 48, 32, False, torch.float32),
    ]:
        q, k = (torch.randn(2, 70, 2, K, dtype=dtype, requires_grad=True) for _ in range(2))
        v = torch.randn(2, 70, 2, V, dtype=dtype, requires_grad=True)
        beta = torch.rand(2, 70, 2, dtype=dtype, requires_grad=True)
        s0 = torch.randn(2, 2, K, V, requires_grad=True) if with_state else None
        inputs = [t for t in (q, k, v, beta, s0) if t is not None]
        case = f"K={K} V={V} chunk={chunk} state={with_state} {str(dtype)[6:]}"

        def run(q=q, k=k, v=v, beta=beta, s0=s0, chunk=chunk, inputs=inputs) -> None:
            out = delta_rule_triton_op(q, k, v, beta, s0, chunk or 0)
            torch.autograd.grad([o.sum() for o in out], inputs)

        launches += _recorded(run, case)
    return launches


def ptxas_usage(ptx: str, arch: int) -> tuple[int, int]:
    """Registers per thread and spilled bytes (stores) that ptxas reports for ``ptx``."""
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "kernel.ptx"
        source.write_text(ptx)
        done = subprocess.run(
            [get_ptxas(arch).path, "-v", f"--gpu-name=sm_{arch}{'a' if arch == 90 else ''}",
             str(source), "-o", str(Path(tmp) / "kernel.cubin")],
            capture_output=True, text=True, check=True,
        )
    registers = re.search(r"Used (\d+) registers", done.stderr)
    spills = re.search(r"(\d+) bytes spill stores", done.stderr)
    return (int(registers.group(1)) if registers else 0, int(spills.group(1)) if spills else 0)


def compile_launch(launch: Launch, arch: int) -> dict:
    """Compile one recorded launch for ``sm_<arch>``: shared bytes, registers, spills.
    Raises what the compiler or ptxas raise, or a RuntimeError if the kernel needs more shared
    memory than the target has (a GPU launch would fail)."""
    import triton.language
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile, make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    launch.kernel.__globals__["tl"] = triton.language
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    jit = JITFunction(launch.kernel)
    binder = create_function_from_signature(jit.signature, jit.params, backend)
    bound, specialization, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = jit._pack_args(
        backend, launch.kwargs, bound, specialization, options)
    kernel = compile(ASTSource(jit, signature, constexprs, attrs), target=target,
                     options=options.__dict__)
    if kernel.metadata.shared > SHARED_LIMIT[arch]:
        raise RuntimeError(f"{kernel.metadata.shared} bytes of shared memory, the limit of "
                           f"sm_{arch} is {SHARED_LIMIT[arch]}")
    registers, spills = ptxas_usage(kernel.asm["ptx"], arch)
    return {"shared": kernel.metadata.shared, "warps": kernel.metadata.num_warps,
            "registers": registers, "spills": spills}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90],
                        choices=sorted(SHARED_LIMIT), help="compute capabilities (default 80 90)")
    args = parser.parse_args(argv)
    launches = srwm_launches() + delta_rule_launches()
    failed = 0
    for arch in args.arch:
        for launch in launches:
            name = f"sm_{arch} {launch.kernel.__name__} [{launch.case}]"
            known = KNOWN.get((launch.kernel.__name__, launch.case))
            try:
                usage = compile_launch(launch, arch)
            except Exception as error:  # noqa: BLE001 — every failure is reported
                if known:
                    print(f"KNOWN {name}: {error}", flush=True)
                    continue
                failed += 1
                print(f"FAILED {name}\n{traceback.format_exc(limit=3)}", flush=True)
                continue
            if known:
                failed += 1
                print(f"FAILED {name}: compiles now; remove it from KNOWN", flush=True)
                continue
            print(f"ok {name}: {usage['warps']} warps, {usage['registers']} registers, "
                  f"{usage['spills']} bytes spilled, {usage['shared']} bytes shared", flush=True)
    print(f"{len(launches) * len(args.arch) - failed} of {len(launches) * len(args.arch)} "
          "compiled")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
