"""Forward+backward tokens/s and autograd memory of the CPU paths of the SRWM and the delta rule:
reference loop, PyTorch scan / chunks, fused C++ kernels; ratios against the reference loop run
in the same process.

    python benchmarks/fused_cpu.py [--T 26 260 1024 4096] [--quick] [--threads 2]

tokens/s counts B·T tokens (each through all H heads). Memory is what autograd holds between the
forward and the backward: the bytes of the distinct storages saved for backward, counted with
``torch.autograd.graph.saved_tensors_hooks`` (inputs that are saved count too). The reference
loop saves T copies of every state; beyond ``--max-reference-T`` it is not run, and its time and
memory are extrapolated linearly in T from the largest T where it ran (marked "est."). Repeats
go round-robin over the paths, so a change in the machine's load affects every path alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table  # noqa: E402

from fwp.ops import _cpp, srwm_rows  # noqa: E402
from fwp.ops.delta_rule.chunk import delta_rule_chunk  # noqa: E402
from fwp.ops.delta_rule.cpu import delta_rule_fused_cpu  # noqa: E402
from fwp.ops.delta_rule.naive import delta_rule_recurrent  # noqa: E402
from fwp.ops.srwm.cpu import srwm_fused_cpu  # noqa: E402
from fwp.ops.srwm.naive import srwm_recurrent  # noqa: E402
from fwp.ops.srwm.scan import srwm_scan  # noqa: E402

N_BETA = 4  # one rate per block, as in the public code


def saved_bytes(call) -> int:  # noqa: ANN001
    """Bytes of the distinct storages autograd saves during one forward of ``call``."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outputs = call()
    del outputs
    return sum(storages.values())


def fwd_bwd_seconds(call, inputs: list[torch.Tensor]) -> float:  # noqa: ANN001
    """Seconds of one forward + backward, the outputs summed into the loss."""
    for t in inputs:
        t.grad = None
    start = time.perf_counter()
    loss = sum(o.float().sum() for o in call() if o is not None and o.requires_grad)
    loss.backward()
    return time.perf_counter() - start


def cases(B: int, T: int, H: int, D: int):
    """(operator, path, inputs, call): the reference loop first."""

    def leaf(*shape, fn=None):
        x = torch.randn(*shape)
        return (fn(x) if fn else x).requires_grad_()

    x = leaf(B, T, H, D)
    W0 = leaf(H, srwm_rows(D, D, N_BETA), D, fn=lambda w: w / D**0.5)
    for path, fn in [("reference loop", srwm_recurrent), ("scan (PyTorch)", srwm_scan),
                     ("fused_cpu", srwm_fused_cpu)]:
        yield "srwm", path, [x, W0], lambda fn=fn: fn(x, W0, N_BETA)
    q, v = leaf(B, T, H, D), leaf(B, T, H, D)
    k = leaf(B, T, H, D, fn=lambda t: F.normalize(t, dim=-1))
    beta = leaf(B, T, H, fn=torch.sigmoid)
    delta_paths = [("reference loop", delta_rule_recurrent), ("chunk (PyTorch)", delta_rule_chunk),
                   ("fused_cpu", delta_rule_fused_cpu)]
    for path, fn in delta_paths:
        yield "delta_rule", path, [q, k, v, beta], lambda fn=fn: fn(q, k, v, beta, None, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--T", type=int, nargs="+", default=[26, 260, 1024, 4096])
    parser.add_argument("--B", type=int, default=16)
    parser.add_argument("--H", type=int, default=16)
    parser.add_argument("--D", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-reference-T", type=int, default=1024,
                        help="longest T at which the reference loop runs (beyond: extrapolated)")
    parser.add_argument("--quick", action="store_true", help="only T ≤ 260")
    args = parser.parse_args()
    if args.quick:
        args.T = [T for T in args.T if T <= 260] or [26, 260]
    ok, why = _cpp.available()
    if not ok:
        sys.exit(f"the fused CPU kernels are unavailable: {why}")
    torch.set_num_threads(args.threads)
    B, H, D = args.B, args.H, args.D
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"B={B} H={H} D={D} n_beta={N_BETA}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs (load average {load}), torch {torch.__version__}; "
          f"median of {args.repeats} runs")
    rows = []
    reference: dict[str, tuple[int, float, int]] = {}  # op → (T, seconds, bytes) measured
    for T in sorted(args.T):
        measured = {}  # (op, path) → ([seconds], saved bytes)
        runs = [case for case in cases(B, T, H, D)
                if not (case[1] == "reference loop" and T > args.max_reference_T)]
        for op, path, inputs, call in runs:
            fwd_bwd_seconds(call, inputs)  # warm-up
            measured[op, path] = [], saved_bytes(call)
        # Round-robin over the paths, so that a change in the machine's load hits them all.
        for _ in range(args.repeats):
            for op, path, inputs, call in runs:
                measured[op, path][0].append(fwd_bwd_seconds(call, inputs))
        for op, path, _, _ in cases(B, T, H, D):
            if (op, path) in measured:
                times, nbytes = measured[op, path]
                seconds, mark = statistics.median(times), ""
                if path == "reference loop":
                    reference[op] = (T, seconds, nbytes)
            else:  # the reference loop beyond --max-reference-T
                T0, seconds0, bytes0 = reference[op]
                seconds, nbytes, mark = seconds0 * T / T0, bytes0 * T // T0, " (est.)"
            ref_seconds = reference[op][1] * T / reference[op][0]
            rows.append([
                op, str(T), path, f"{B * T / seconds:,.0f}{mark}", f"{ref_seconds / seconds:.1f}",
                f"{nbytes / 2**20:,.1f}{mark}",
            ])
            print(" | ".join(rows[-1]), flush=True)
    header = ["operator", "T", "path", "tokens/s (fwd+bwd)", "× reference loop", "saved MiB"]
    print()
    print(markdown_table(header, rows))
    if any(T > args.max_reference_T for T in args.T):
        print(f"\n(est.): reference loop not run beyond T={args.max_reference_T}; "
              "its time and memory are extrapolated linearly in T")


if __name__ == "__main__":
    main()
