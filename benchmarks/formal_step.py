"""CPU seconds per training step of ``fwp formal`` models on one task, one thread: what a sweep
of these models will cost (``docs/algorithmic.md`` sizes its study with it).

    python benchmarks/formal_step.py listops 10 --models lstm deltanet mesa

Each model: one untimed warm-up step, then the mean ``time.process_time`` of ``--repeats``
steps on the same batch of ``--batch`` examples of the given bin size.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fwp.formal.config import ModelConfig
from fwp.formal.data import Batch, batch_loss, encode
from fwp.formal.languages import get_language
from fwp.formal.model import FormalModel
from fwp.formal.sweep import ModelSpec

STUDY_MODELS = ["lstm", "transformer", "linear", "deltanet", "delta_rnn", "rec_deltanet",
                "deltanet_neg=deltanet:allow_negative_eigenvalues=true,feature_map=l2", "srwm",
                "delta_mlp", "mesa"]


def step(model: FormalModel, optimizer: torch.optim.Optimizer, batch: Batch) -> None:
    loss = batch_loss(model(batch.tokens), batch)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", help="a language or task name, e.g. listops, code-exec-3")
    parser.add_argument("size", type=int, help="the bin size of the examples")
    parser.add_argument("--models", nargs="+", default=STUDY_MODELS)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--d-ff", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = get_language(args.task)
    rng = np.random.default_rng(0)
    batch = encode(task, [task.sample(args.size, rng) for _ in range(args.batch)])
    print(f"{args.task}, size {args.size}: batch {tuple(batch.tokens.shape)}, one thread")
    for entry in args.models:
        spec = ModelSpec.parse(entry)
        config = ModelConfig(model=spec.layer, layers=args.layers, d_model=args.d_model,
                             heads=args.heads, d_ff=args.d_ff, options=spec.options)
        torch.manual_seed(0)
        model = FormalModel(task, config)
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)

        step(model, optimizer, batch)
        start = time.process_time()
        for _ in range(args.repeats):
            step(model, optimizer, batch)
        print(f"{spec.label:14s} {(time.process_time() - start) / args.repeats:.3f} s/step",
              flush=True)


if __name__ == "__main__":
    main()
