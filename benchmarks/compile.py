"""torch.compile against eager: steps per second of a language-model training step per layer.

For each registered layer (or --layers): an LM of two blocks of that layer (byte vocabulary),
one training step = forward on [--batch, --length] tokens, cross-entropy, backward, AdamW step.
The compiled step is ``torch.compile(step, fullgraph=True)`` (Inductor); both are warmed up (the
compiled one past its compilation, whose time is printed) and timed in this one process, and the
script prints steps per second and compiled ÷ eager.

    python benchmarks/compile.py --layers deltanet srwm transformer lstm
"""

from __future__ import annotations

import argparse
import functools
import time

import torch
import torch.nn.functional as F
from common import machine, markdown_table, timed, warm_up

from fwp.layers import LAYERS
from fwp.lm.model import FwpLM, LMSpec


def make_step(model: FwpLM, optimizer: torch.optim.Optimizer, compiled: bool):  # noqa: ANN201
    def loss_of(tokens: torch.Tensor) -> torch.Tensor:
        logits, _ = model(tokens[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())

    forward = torch.compile(loss_of, fullgraph=True) if compiled else loss_of

    def step(tokens: torch.Tensor) -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        forward(tokens).backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", nargs="+", default=sorted(LAYERS))
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    rows = []
    for name in args.layers:
        torch._dynamo.reset()
        tokens = torch.randint(0, 256, (args.batch, args.length + 1))
        rates = {}
        for compiled in (False, True):
            torch.manual_seed(0)
            model = FwpLM(LMSpec(256, [name, name], args.d_model, args.heads, 4 * args.d_model))
            step = make_step(model, torch.optim.AdamW(model.parameters(), lr=1e-4), compiled)
            once = functools.partial(step, tokens)
            start = time.perf_counter()
            warm_up(once, seconds=0.5, calls=3)
            warm = time.perf_counter() - start
            rates[compiled] = 1.0 / timed(once, args.repeats).median
        rows.append([name, f"{rates[False]:.1f}", f"{rates[True]:.1f}",
                     f"{rates[True] / rates[False]:.2f}", f"{warm:.0f}"])
        print(f"{name}: done", flush=True)
    print(markdown_table(["layer", "eager steps/s", "compiled steps/s", "compiled ÷ eager",
                          "compile + warm-up (s)"], rows))


if __name__ == "__main__":
    main()
