"""How fast does a core learn delayed labels? A synthetic probe, in seconds per core on a CPU.

Each stream shows N = 5 random 16-dimensional prototypes, K = 6 noisy copies of each in random
order; the label of step t is fed with step t + 1 (``fwp.fewshot.protocols.streams``). Two blocks
of width 32, 2 heads, Adam 3·10⁻³, batch 32; every 100 steps the accuracy on 200 new streams,
overall and at the 1st and 5th instance of a class (chance 20 %). ``--short-conv 2`` adds the
causal convolution of width 2 on the blocks' input that ``fwp fewshot train --short-conv`` adds;
``--token-shift`` feeds the previous image with the current one (``--token-shift`` there).

    python benchmarks/delayed_labels_probe.py --model srwm --short-conv 2
    python benchmarks/delayed_labels_probe.py --model deltanet --token-shift
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.nn import functional as F

from fwp.fewshot.protocols.streams import delayed_label_input
from fwp.layers import LayerStack

N, K, DIM, WIDTH = 5, 6, 16, 32
OPTIONS = {"srwm": {}, "deltanet": {"feature_map": "l2"}, "lstm": {}}


def streams(batch: int, generator: torch.Generator, shift: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``[B, N·K, DIM + N]`` (image ⊕ delayed label, ⊕ the previous image when
    ``shift``) and labels ``[B, N·K]``."""
    prototypes = torch.randn(batch, N, DIM, generator=generator)
    labels = torch.stack([torch.randperm(N * K, generator=generator) % N for _ in range(batch)])
    images = prototypes.gather(1, labels[..., None].expand(-1, -1, DIM))
    images = images + 0.5 * torch.randn(batch, N * K, DIM, generator=generator)
    inputs = [images, delayed_label_input(labels, N)]
    if shift:
        inputs.append(F.pad(images, (0, 0, 1, 0))[:, :-1])
    return torch.cat(inputs, -1), labels


def instances(labels: torch.Tensor) -> torch.Tensor:
    """How often each step's label came before in its stream."""
    onehot = F.one_hot(labels, N)
    return ((onehot.cumsum(1) - onehot) * onehot).sum(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(OPTIONS), default="srwm")
    parser.add_argument("--short-conv", type=int, default=0)
    parser.add_argument("--token-shift", action="store_true")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--key-identity", type=float, default=3.0, help="srwm: c·I on W0's keys")
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    options = dict(OPTIONS[args.model])
    if args.model == "srwm":
        options["key_identity"] = args.key_identity
    embed = nn.Linear(DIM + N + (DIM if args.token_shift else 0), WIDTH)
    head = nn.Linear(WIDTH, N)
    conv = nn.Conv1d(WIDTH, WIDTH, args.short_conv, groups=WIDTH) if args.short_conv else None
    core = LayerStack([args.model] * 2, WIDTH, 2, 2 * WIDTH, residual="normed",
                      layer_options={args.model: options})
    modules = nn.ModuleList([m for m in (embed, conv, core, head) if m is not None])
    optimiser = torch.optim.Adam(modules.parameters(), args.lr, betas=(0.9, 0.995))

    def logits(x: torch.Tensor) -> torch.Tensor:
        h = embed(x)
        if conv is not None:
            h = conv(F.pad(h.transpose(1, 2), (args.short_conv - 1, 0))).transpose(1, 2)
        return head(core(h)[0])

    for step in range(1, args.steps + 1):
        x, y = streams(32, generator, args.token_shift)
        loss = F.cross_entropy(logits(x).flatten(0, 1), y.flatten())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 100 == 0:
            with torch.no_grad():
                x, y = streams(200, generator, args.token_shift)
                correct = (logits(x).argmax(-1) == y).float()
            first, fifth = correct[instances(y) == 0].mean(), correct[instances(y) == 4].mean()
            print(f"{args.model} short_conv={args.short_conv} token_shift={args.token_shift} "
                  f"step {step}: {100 * correct.mean():.1f} % (1st instance "
                  f"{100 * first:.1f} %, 5th {100 * fifth:.1f} %)", flush=True)


if __name__ == "__main__":
    main()
