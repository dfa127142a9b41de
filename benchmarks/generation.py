"""Generation cost against context length: the FWP state against the softmax key/value cache.

Two byte-level language models of the same shape (two blocks of width --d-model) differ only in
their sequence layer: an FWP (``--fwp``, default deltanet) and causal softmax attention. For each
context length L the model holds the state it would have after L tokens: the FWP's fast weights
(the same size for every L) or a key/value cache of L positions (random keys and values: the
cost of a decoding step does not depend on their values). Then --tokens tokens are generated one
at a time (warmed up first), and the script prints tokens per second and the bytes of the
state, with the FWP ÷ softmax ratios, all measured in this one run.

    python benchmarks/generation.py --lengths 1024 2048 4096 8192 16384 32768
"""

from __future__ import annotations

import argparse
import time

import torch
from common import machine, markdown_table

from fwp.layers import map_state
from fwp.lm.generate import sample_next
from fwp.lm.model import FwpLM, LMSpec


def state_bytes(state: object) -> int:
    sizes: list[int] = []
    map_state(lambda t: sizes.append(t.numel() * t.element_size()) or t, state)
    return sum(sizes)


def state_at(model: FwpLM, length: int, batch: int) -> list:
    """The state after a 16-token prompt, each softmax cache stretched to ``length`` positions."""
    _, state = model(torch.randint(0, 256, (batch, 16)))
    if not model.has_cache():
        return state
    return [tuple(torch.randn(*t.shape[:-2], length, t.shape[-1]) for t in s)
            if model.stack.blocks[i].layer.__class__.__name__ == "SoftmaxAttention" else s
            for i, s in enumerate(state)]


@torch.no_grad()
def decode_rate(model: FwpLM, state: list, tokens: int) -> float:
    """Tokens per second of one-token steps from ``state`` (state not kept between calls)."""
    token = torch.zeros(state_batch(state), 1, dtype=torch.long)
    for _ in range(2):  # warm-up
        logits, _ = model(token, state)
    start = time.perf_counter()
    s = state
    for _ in range(tokens):
        logits, s = model(token, s)
        token = sample_next(logits[:, -1], 0.0)[:, None]
    return tokens * token.shape[0] / (time.perf_counter() - start)


def state_batch(state: list) -> int:
    first: list[int] = []
    map_state(lambda t: first.append(t.shape[0]) or t, state)
    return first[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+",
                        default=[1024, 2048, 4096, 8192, 16384, 32768])
    parser.add_argument("--fwp", default="deltanet", help="the FWP layer")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per length")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    models = {name: FwpLM(LMSpec(256, [name, name], args.d_model, args.heads,
                                 4 * args.d_model)).eval()
              for name in (args.fwp, "transformer")}
    for name, model in models.items():
        print(f"{name}: {model.n_parameters():,} parameters")
    rows = []
    for length in args.lengths:
        fwp_state = state_at(models[args.fwp], length, args.batch)
        kv_state = state_at(models["transformer"], length, args.batch)
        fwp_rate = decode_rate(models[args.fwp], fwp_state, args.tokens)
        kv_rate = decode_rate(models["transformer"], kv_state, args.tokens)
        fwp_mem, kv_mem = state_bytes(fwp_state), state_bytes(kv_state)
        rows.append([f"{length:,}", f"{fwp_rate:,.0f}", f"{kv_rate:,.0f}",
                     f"{fwp_rate / kv_rate:.2f}", f"{fwp_mem / 2**20:.2f}",
                     f"{kv_mem / 2**20:.2f}", f"{kv_mem / fwp_mem:.1f}"])
        print(f"context {length}: done", flush=True)
    print(markdown_table(
        ["context", f"{args.fwp} tokens/s", "softmax tokens/s", "speed ratio (FWP ÷ softmax)",
         f"{args.fwp} state (MiB)", "softmax KV cache (MiB)", "memory ratio (KV ÷ FWP)"], rows))


if __name__ == "__main__":
    main()
