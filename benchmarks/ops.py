"""Forward+backward tokens/s of every operator and mode, as ratios against baselines measured
in the same run: the operator's own reference loop and causal ``scaled_dot_product_attention``.

Every path is run untimed first (each configuration, then each call warmed up again right before
its timing), so no row pays for lazy initialisation; each row is the median of ``--repeats``
timed calls, with the range over them.

    python benchmarks/ops.py [--T 26 260 1024] [--B 16 --H 16 --D 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fwd_bwd, machine, markdown_table, timed, warm_up  # noqa: E402

from fwp.ops import delta_mlp, delta_rule, linear_attention, mesa, srwm, srwm_rows  # noqa: E402
from fwp.ops.delta_mlp import MODES as DELTA_MLP_MODES  # noqa: E402
from fwp.ops.delta_rule import MODES as DELTA_MODES  # noqa: E402
from fwp.ops.linear_attention import MODES as LINEAR_MODES  # noqa: E402
from fwp.ops.mesa import MODES as MESA_MODES  # noqa: E402
from fwp.ops.srwm import MODES as SRWM_MODES  # noqa: E402


def runnable(modes: dict, tensor: torch.Tensor) -> list[str]:
    """The modes that can run here, the reference loop first; says why the others cannot."""
    names = []
    for name, mode in modes.items():
        ok, reason = mode.can_run(tensor)
        if ok:
            names.append(name)
        else:
            print(f"skipping mode {name!r}: {reason}", file=sys.stderr)
    return sorted(names, key=lambda name: name != "recurrent")


def cases(B: int, T: int, H: int, D: int):
    """(operator, mode, inputs, call) for every operator and mode."""

    def leaf(*shape, fn=None):
        x = torch.randn(*shape)
        return (fn(x) if fn else x).requires_grad_()

    q, v = leaf(B, T, H, D), leaf(B, T, H, D)
    k = leaf(B, T, H, D, fn=lambda x: F.normalize(x, dim=-1))
    beta = leaf(B, T, H, fn=torch.sigmoid)
    x, W0 = leaf(B, T, H, D), leaf(H, srwm_rows(D, D), D, fn=lambda w: w / D**0.5)
    for mode in runnable(LINEAR_MODES, q):
        yield "linear_attention", mode, [q, k, v], lambda m=mode: linear_attention(q, k, v, mode=m)
    for mode in runnable(DELTA_MODES, q):
        yield "delta_rule", mode, [q, k, v, beta], lambda m=mode: delta_rule(q, k, v, beta, mode=m)
    for mode in runnable(SRWM_MODES, x):
        yield "srwm", mode, [x, W0], lambda m=mode: srwm(x, W0, mode=m)
    W1, W2 = leaf(H, D, 2 * D, fn=lambda w: w / D**0.5), leaf(H, 2 * D, D, fn=lambda w: w / 6)
    for mode in runnable(DELTA_MLP_MODES, q):
        yield "delta_mlp", mode, [q, k, v, beta, W1, W2], lambda m=mode: delta_mlp(
            q, k, v, beta, [W1, W2], mode=m)[:1]
    qn, g = leaf(B, T, H, D, fn=lambda x: F.normalize(x, dim=-1)), leaf(B, T, H, fn=F.logsigmoid)
    lamb = leaf(H, D, fn=lambda x: F.softplus(x) + 0.25)
    for mode in runnable(MESA_MODES, q):
        yield "mesa", mode, [qn, k, v, beta, g, lamb], lambda m=mode: mesa(
            qn, k, v, beta, g, lamb, mode=m)


def configurations(B: int, T: int, H: int, D: int):
    """(operator, mode, timer) for causal SDPA and every operator and mode at length T."""
    q, k, v = (torch.randn(B, H, T, D, requires_grad=True) for _ in range(3))
    yield "softmax attention", "sdpa", fwd_bwd(
        lambda: (F.scaled_dot_product_attention(q, k, v, is_causal=True),), [q, k, v]
    )
    for op, mode, inputs, call in cases(B, T, H, D):
        yield op, mode, fwd_bwd(call, inputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--T", type=int, nargs="+", default=[26, 260, 1024])
    parser.add_argument("--B", type=int, default=16)
    parser.add_argument("--H", type=int, default=16)
    parser.add_argument("--D", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    B, H, D = args.B, args.H, args.D
    print(machine())
    print(f"B={B} H={H} D={D}; tokens/s: median of {args.repeats} timed calls (min–max)")
    grid = {T: list(configurations(B, T, H, D)) for T in args.T}
    for timers in grid.values():  # every path once, untimed, before any timing
        for _, _, once in timers:
            once()
    rows = []
    for T, timers in grid.items():
        baseline: dict[str, float] = {}
        for op, mode, once in timers:
            warm_up(once)
            timing = timed(once, args.repeats)
            if mode in ("sdpa", "recurrent"):
                baseline[mode if mode == "sdpa" else op] = timing.median
            rows.append([
                str(T), op, mode, timing.rate(B * T),
                f"{baseline[op] / timing.median:.2f}" if op in baseline else "",
                f"{baseline['sdpa'] / timing.median:.2f}",
            ])
            print(" | ".join(rows[-1]), flush=True)
    header = ["T", "operator", "mode", "tokens/s fwd+bwd (min–max)", "× reference loop",
              "× sdpa"]
    print()
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
