"""GPU benchmark of the SRWM and delta-rule paths: forward+backward tokens/s and peak memory,
as ratios against the reference loop run in the same process and against causal
``scaled_dot_product_attention``, and the fraction of the memory-bandwidth and FLOP bounds that
the SRWM Triton kernel reaches. Every fast path is first checked against its reference on a small
shape (forward and gradients), since on a GPU this is where the compiled kernels are tested.

    python benchmarks/gpu.py [--T 26 260 1024 4096] [--D 16 64] [--B 16] [--H 16]
        [--dtype float32|bfloat16] [--peak-bandwidth TB/s] [--peak-tflops TF/s]
        [--public-srwm DIR] [--skip-check]
    TRITON_INTERPRET=1 python benchmarks/gpu.py --device cpu --quick   # dry run, no GPU

``--public-srwm DIR``: a local copy (kept in the git-ignored third_party/, never committed) of
IDSIA/modern-srwm's ``supervised_learning/self_ref_v0`` (DIR is that folder or its parent); its
CUDA kernel (float32, four β, D_out = D) is then timed and checked beside ours.
flash-linear-attention's ``chunk_delta_rule`` is timed when ``fla`` is importable.
"""

from __future__ import annotations

import argparse
import importlib
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table  # noqa: E402

from fwp.ops import srwm_rows  # noqa: E402
from fwp.ops._triton_utils import available as triton_available  # noqa: E402
from fwp.ops.delta_rule.chunk import delta_rule_chunk  # noqa: E402
from fwp.ops.delta_rule.naive import delta_rule_recurrent  # noqa: E402
from fwp.ops.delta_rule.triton import (  # noqa: E402
    delta_rule_chunk_triton,
    delta_rule_fused_recurrent_triton,
)
from fwp.ops.srwm.naive import srwm_recurrent  # noqa: E402
from fwp.ops.srwm.scan import srwm_scan  # noqa: E402
from fwp.ops.srwm.triton import srwm_triton  # noqa: E402

# Dense HBM bandwidth (TB/s) and float32 non-tensor-core peak (TFLOP/s), by device name.
PEAKS = [("H200", 4.8, 67.0), ("H100 PCIe", 2.0, 51.0), ("H100 NVL", 3.9, 60.0),
         ("H100", 3.35, 67.0), ("A100", 2.0, 19.5)]
N_BETA = 4  # one rate per block, as the public code (and its kernel)


@dataclass
class Variant:
    """One way of computing an operator: ``make(B, T, H, D)`` → (leaf inputs, call).

    Every ``make`` of an operator draws its inputs in the same order and shapes, so after
    :meth:`Setup.reseed` all variants see the same numbers (what :func:`check` relies on).
    """

    op: str
    name: str
    make: Callable[[int, int, int, int], tuple[list[torch.Tensor], Callable[[], tuple]]]
    unavailable: str = ""  # why it cannot run here, if it cannot


class Setup:
    def __init__(self, device: torch.device, dtype: torch.dtype, seed: int = 0) -> None:
        self.device, self.dtype = device, dtype
        self.generator = torch.Generator(device="cpu")
        self.reseed(seed)

    def reseed(self, seed: int = 0) -> None:
        self.generator.manual_seed(seed)

    def leaf(self, *shape: int, fn: Callable | None = None, scale: float = 1.0) -> torch.Tensor:
        x = torch.randn(*shape, generator=self.generator) * scale
        x = fn(x) if fn is not None else x
        return x.to(self.device, self.dtype).requires_grad_()


def load_public_srwm(folder: str) -> tuple[Callable | None, str]:
    """The public kernel's autograd function, compiled by its own loader (needs nvcc)."""
    path = Path(folder).resolve()
    parent = path.parent if (path / "__init__.py").exists() else path
    if not (parent / "self_ref_v0" / "__init__.py").exists():
        return None, f"no self_ref_v0/__init__.py in {path} or its parent"
    sys.path.insert(0, str(parent))
    try:
        module = importlib.import_module("self_ref_v0")
    except Exception as error:  # compile errors, missing nvcc: report, do not crash
        return None, f"self_ref_v0 did not load: {error!r}"[:300]
    return module.self_ref_v0, ""


def public_weights(W0: torch.Tensor, B: int, D: int) -> list[torch.Tensor]:
    """Our W0 [H, R, D] (rows y, k, q, β; four rates in that block order) as the public kernel's
    [B, H, D_in, D_out] matrices W_y, W_q, W_k and w_b (rates in the order y, q, k, β)."""
    y, k, q, b = W0.detach().split([D, D, D, N_BETA], dim=-2)
    b = b[..., [0, 2, 1, 3], :]
    return [
        m.transpose(-1, -2).unsqueeze(0).expand(B, -1, -1, -1).contiguous().requires_grad_()
        for m in (y, q, k, b)
    ]


def srwm_paths(setup: Setup, public: Callable | None, public_why: str) -> list[Variant]:
    def make(fn):
        def build(B, T, H, D):
            x = setup.leaf(B, T, H, D)
            W0 = setup.leaf(H, srwm_rows(D, D, N_BETA), D, scale=D**-0.5)
            return [x, W0], lambda: fn(x, W0, N_BETA, False)
        return build

    def build_public(B, T, H, D):
        x = setup.leaf(B, T, H, D)
        W0 = setup.leaf(H, srwm_rows(D, D, N_BETA), D, scale=D**-0.5)
        weights = public_weights(W0, B, D)

        def call():
            # Its layout is [B, H, T, D] (the copy is timed too: small beside the scan), and it
            # overwrites its weight inputs with W_T, so it gets copies on every call.
            y = public(x.transpose(1, 2).contiguous(), *(w.clone() for w in weights))
            return (y.transpose(1, 2),)
        return [x, *weights], call

    ok, why = triton_available(setup.device)
    if public is None:
        public_why = public_why or "pass --public-srwm DIR"
    elif setup.dtype != torch.float32 or setup.device.type != "cuda":
        public_why = "float32 CUDA only"
    return [
        Variant("srwm", "recurrent", make(srwm_recurrent)),
        Variant("srwm", "scan", make(srwm_scan)),
        Variant("srwm", "triton", make(srwm_triton), "" if ok else why),
        Variant("srwm", "public_cuda", build_public, public_why if public_why else ""),
    ]


def delta_paths(setup: Setup) -> list[Variant]:
    def make(fn, **kwargs):
        def build(B, T, H, D):
            q, v = setup.leaf(B, T, H, D), setup.leaf(B, T, H, D)
            k = setup.leaf(B, T, H, D, fn=lambda x: F.normalize(x, dim=-1))
            beta = setup.leaf(B, T, H, fn=torch.sigmoid)
            return [q, k, v, beta], lambda: fn(q, k, v, beta, **kwargs)
        return build

    ok, why = triton_available(setup.device)
    fla_why = ""
    try:
        from fla.ops.delta_rule import chunk_delta_rule

        def fla(q, k, v, beta):
            return chunk_delta_rule(q, k, v, beta, scale=1.0, output_final_state=False)
    except Exception as error:  # not installed, or built for another torch
        fla, fla_why = None, f"fla not importable ({type(error).__name__})"
    if fla is not None and setup.device.type != "cuda":
        fla_why = "CUDA only"
    return [
        Variant("delta_rule", "recurrent", make(delta_rule_recurrent)),
        Variant("delta_rule", "chunk", make(delta_rule_chunk, chunk_size=64)),
        Variant("delta_rule", "triton", make(delta_rule_fused_recurrent_triton), "" if ok else why),
        Variant("delta_rule", "triton_chunk", make(delta_rule_chunk_triton, chunk_size=64),
              "" if ok else why),
        Variant("delta_rule", "fla_chunk", make(fla) if fla else None, fla_why),
    ]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fwd_bwd(call: Callable[[], tuple], inputs: list[torch.Tensor]) -> None:
    for t in inputs:
        t.grad = None
    outputs = call()
    loss = sum(o.float().sum() for o in outputs if o is not None and o.requires_grad)
    loss.backward()


def measure(
    call: Callable[[], tuple], inputs: list[torch.Tensor], device: torch.device, repeats: int
) -> tuple[float, float | None]:
    """(median seconds of forward+backward, peak bytes above what was allocated before)."""
    fwd_bwd(call, inputs)  # warm-up: compilation, allocator
    synchronize(device)
    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fwd_bwd(call, inputs)
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fwd_bwd(call, inputs)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak


def srwm_traffic(B: int, T: int, H: int, D: int, in_bytes: int) -> tuple[float, float]:
    """(bytes, FLOPs) of one forward+backward of the Triton SRWM scan, D_out = D.

    Bytes: x read twice, y written, ∂y read, ∂x written (input dtype); per step φ(k), φ(q), σ(b)
    and d written and read back (float32); W0 read, W_T written and read, ∂W_T read, ∂W0
    written (float32, per sequence). FLOPs per step and head: 6·R·D forward (W x, W (φ(q) − φ(k)),
    the update), 14·R·D backward (rebuild W, G φ(k), Gᵀu, Wᵀ∂d, Wᵀ∂[y;k;q;b], two outer products).
    """
    R = srwm_rows(D, D, N_BETA)
    steps = B * T * H
    per_step = 5 * D * in_bytes + 2 * 4 * (2 * D + N_BETA + R)
    matrices = 5 * B * H * R * D * 4
    return steps * per_step + matrices, steps * 20 * R * D


def device_peaks(args: argparse.Namespace, device: torch.device) -> tuple[float, float, str]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    bandwidth, tflops = args.peak_bandwidth, args.peak_tflops
    for key, bw, tf in PEAKS:
        if key in name:
            bandwidth, tflops = bandwidth or bw, tflops or tf
            break
    return bandwidth or math.nan, tflops or math.nan, name


def check(variants: list[Variant], setup: Setup, shape: tuple[int, int, int, int],
          tolerance: float) -> dict[str, str]:
    """Max abs difference to the reference loop, forward and gradients, at one small shape.

    Outputs are compared as far as both have them (the public SRWM kernel returns y only);
    gradients for all inputs when the inputs match, else for the first (x) only.
    """
    results = {}
    reference = next(v for v in variants if v.name == "recurrent")
    for variant in variants:
        if variant is reference or variant.unavailable:
            continue
        try:
            setup.reseed()
            ref_inputs, ref_call = reference.make(*shape)
            setup.reseed()
            inputs, call = variant.make(*shape)
            outputs = [o for o in call() if o is not None]
            ref_outputs = [o for o in ref_call() if o is not None][: len(outputs)]
            n_in = len(inputs) if len(inputs) == len(ref_inputs) else 1
            weights = [torch.randn_like(o) for o in ref_outputs]
            got, want = [*outputs], [*ref_outputs]
            for outs, ins, into in ((outputs, inputs, got), (ref_outputs, ref_inputs, want)):
                loss = sum((w * o.float()).sum() for w, o in zip(weights, outs))
                into += torch.autograd.grad(loss, ins[:n_in], allow_unused=True)
            error = max(
                (g.float() - w.float()).abs().max().item()
                for g, w in zip(got, want) if g is not None and w is not None
            )
            verdict = "ok" if error <= tolerance else "MISMATCH"
            results[variant.name] = f"{verdict} (max |Δ| {error:.1e})"
        except Exception as error:  # report and go on: the timings still mean something
            results[variant.name] = f"FAILED: {error!r}"[:300]
    return results


def cases(args: argparse.Namespace) -> Iterator[tuple[int, int]]:
    for D in args.D:
        for T in args.T:
            yield D, T


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    parser.add_argument("--T", type=int, nargs="+", default=[26, 260, 1024, 4096])
    parser.add_argument("--D", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--B", type=int, default=16)
    parser.add_argument("--H", type=int, default=16)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peak-bandwidth", type=float, default=None,
                        help="TB/s; default by device name (H100 3.35, H200 4.8)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="float32 TFLOP/s without tensor cores; default by device name")
    parser.add_argument("--public-srwm", default=None, metavar="DIR")
    parser.add_argument("--skip-check", action="store_true")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("No GPU present (torch.cuda.is_available() is False): nothing to benchmark.\n"
              "To dry-run this script on CPU: "
              "TRITON_INTERPRET=1 python benchmarks/gpu.py --device cpu --quick")
        return 0
    if args.quick:
        args.B, args.H, args.D, args.T, args.repeats = 2, 2, [8], [5, 12], 1
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    setup = Setup(device, dtype)

    public, public_why = load_public_srwm(args.public_srwm) if args.public_srwm else (None, "")
    variants = srwm_paths(setup, public, public_why) + delta_paths(setup)
    bandwidth, tflops, name = device_peaks(args, device)
    print(f"{name}: B={args.B} H={args.H} {args.dtype}, torch {torch.__version__}; peaks "
          f"{bandwidth} TB/s, {tflops} TFLOP/s float32")
    for path in variants:
        if path.unavailable:
            print(f"  {path.op}/{path.name}: not run: {path.unavailable}")

    if not args.skip_check:
        tolerance = 2e-3 if dtype == torch.float32 else 0.1
        for D in args.D:
            for op in ("srwm", "delta_rule"):
                shape = (2, 37 if not args.quick else 7, 2, D)
                for name_, verdict in check(
                    [v for v in variants if v.op == op], setup, shape, tolerance
                ).items():
                    print(f"  check {op}/{name_} at B,T,H,D={shape}: {verdict}")

    header = ["D", "T", "operator", "path", "tokens/s (fwd+bwd)", "peak MiB",
              "× reference loop", "× sdpa", "bound reached"]
    rows = []
    for D, T in cases(args):
        B, H = args.B, args.H
        q, k, v = (setup.leaf(B, H, T, D) for _ in range(3))
        sdpa, sdpa_peak = measure(
            lambda q=q, k=k, v=v: (F.scaled_dot_product_attention(q, k, v, is_causal=True),),
            [q, k, v], device, args.repeats,
        )
        rows.append([str(D), str(T), "softmax attention", "sdpa (causal)",
                     f"{B * T / sdpa:,.0f}", mib(sdpa_peak), "", "1.00", ""])
        print(" | ".join(rows[-1]), flush=True)
        reference: dict[str, float] = {}
        for path in variants:
            if path.unavailable:
                continue
            cells = [str(D), str(T), path.op, path.name]
            try:
                inputs, call = path.make(B, T, H, D)
                seconds, peak = measure(call, inputs, device, args.repeats)
            except Exception as error:  # out of memory (the reference at large T), or a failure
                oom = isinstance(error, torch.cuda.OutOfMemoryError)
                rows.append(cells + ["out of memory" if oom else f"failed: {error!r}"[:120],
                                     "", "", "", ""])
                print(" | ".join(rows[-1]), flush=True)
                continue
            finally:
                inputs = call = None  # free this variant's tensors before the next one
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            if path.name == "recurrent":
                reference[path.op] = seconds
            bound = ""
            if path.op == "srwm" and path.name == "triton" and not math.isnan(bandwidth):
                nbytes, flops = srwm_traffic(B, T, H, D, torch.finfo(dtype).bits // 8)
                bound = (f"{nbytes / seconds / 1e12 / bandwidth:.1%} of HBM bandwidth, "
                         f"{flops / seconds / 1e12 / tflops:.1%} of FP32 peak")
            ratio = f"{reference[path.op] / seconds:.2f}" if path.op in reference else "—"
            rows.append(cells + [f"{B * T / seconds:,.0f}", mib(peak), ratio,
                                 f"{sdpa / seconds:.2f}", bound])
            print(" | ".join(rows[-1]), flush=True)
    print()
    print(markdown_table(header, rows))
    print("\n× reference loop: time of the operator's reference loop / time of the path "
          "(— where the reference ran out of memory); × sdpa likewise against causal SDPA.")
    return 0


def mib(peak: float | None) -> str:
    return "—" if peak is None else f"{peak / 2**20:,.1f}"


if __name__ == "__main__":
    sys.exit(main())
