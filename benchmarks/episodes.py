"""Episodes/s of ``EpisodeSampler`` for 5-way 5-shot 28x28 glyphs from the cache, as ratios against
a per-image loop measured in the same run (the way per-item ``Dataset`` loaders build episodes).
Also times the glyphs set's first build and its cached load, in a fresh temporary cache.

    python benchmarks/episodes.py [--n-way 5 --k-shot 5 --n-query 1] [--batch 16] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch


def per_image_episode(dataset, rng: np.random.Generator, n: int, k: int, q: int):
    """Baseline: one image at a time, as a map-style loader does."""
    classes = rng.choice(dataset.num_classes, n, replace=False)
    support, query = [], []
    for label, c in enumerate(classes):
        for j, p in enumerate(rng.choice(dataset.class_counts[c], k + q, replace=False)):
            image = dataset.gather(np.array(c), np.array(p))
            (support if j < k else query).append((image, label))
    order = rng.permutation(len(support))
    images = torch.stack([support[i][0] for i in order])
    labels = torch.tensor([support[i][1] for i in order])
    return images, labels, torch.stack([image for image, _ in query])


def rate(step, episodes_per_step: int, seconds: float) -> float:
    step()  # warm up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        count += episodes_per_step
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-way", type=int, default=5)
    parser.add_argument("--k-shot", type=int, default=5)
    parser.add_argument("--n-query", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    n, k, q, b = args.n_way, args.k_shot, args.n_query, args.batch

    with tempfile.TemporaryDirectory() as cache:
        os.environ["FWP_CACHE"] = cache
        from fwp.data import EpisodeSampler, EpisodeStream, load_dataset

        start = time.perf_counter()
        load_dataset("glyphs", split="train")
        build = time.perf_counter() - start
        start = time.perf_counter()
        counts = {s: load_dataset("glyphs", split=s) for s in ("train", "val", "test")}
        load = time.perf_counter() - start
        print(
            f"glyphs: first build {build:.1f} s, cached load of all splits {load:.3f} s "
            f"({os.cpu_count()} CPU cores)"
        )
        for split, dataset in counts.items():
            print(f"  {split:5} {dataset.describe()}")

        dataset = counts["train"]
        sampler = EpisodeSampler(dataset, n, k, n_query=q)
        rng = np.random.default_rng(0)
        loader = torch.utils.data.DataLoader(
            EpisodeStream(EpisodeSampler(dataset, n, k, n_query=q), b),
            batch_size=None,
            num_workers=2,
        )
        rows = [
            (
                "per-image loop (baseline)",
                rate(lambda: per_image_episode(dataset, rng, n, k, q), 1, args.seconds),
            ),
            (f"EpisodeSampler.sample({b})", rate(lambda: sampler.sample(b), b, args.seconds)),
        ]
        batches = iter(loader)  # workers start only now, not during the other measurements
        rows.append(
            (
                f"DataLoader(EpisodeStream, {b}/batch, 2 workers)",
                rate(lambda: next(batches), b, args.seconds),
            )
        )
    print(f"\n{n}-way {k}-shot, {q} query/class, 28x28 glyphs from the cache")
    print("| sampler | episodes/s | vs baseline |\n|---|---:|---:|")
    for name, value in rows:
        print(f"| {name} | {value:,.0f} | {value / rows[0][1]:.1f}x |")


if __name__ == "__main__":
    main()
