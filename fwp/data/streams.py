"""Streams of labelled images made of task segments, each a pure function of (seed, index).

A stream is S segments one after the other. Segment s is an N-way task on one data set ("domain"):
N classes drawn for it alone, in random order (class ``classes[s, j]`` gets label ``j``, so every
segment has a fresh class → label map), K images per class shown in random order, and optionally
Q query images per class kept aside. Two segments on the same domain never share a class.

The settings of the SRWM paper (Irie et al., ICML 2022) and of "Automating Continual Learning"
(Irie, Csordás & Schmidhuber) are streams of this kind:

- delayed labels: one segment; the learner predicts each image's label before it is told it;
- sequential multi-task adaptation: two segments on two domains, the order drawn per stream, and
  the last ``r ∈ [0, max_trim]`` images of each segment dropped in training, so the switch does
  not come at a fixed position (the public code's ``max_trim``);
- meta-continual learning: two segments with queries after each.

Images of every domain are brought to one shape ``(C, H, W)`` (by default the first domain's
height and width and the most channels of any domain): channels repeated (1 → 3) or averaged
(3 → 1), then bilinear resizing with antialiasing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch.nn import functional as F

from fwp.data.dataset import FewShotDataset
from fwp.data.episodes import SeededSampler
from fwp.errors import UserError


@dataclass
class Stream:
    """A batch of B streams of S segments; images are float32 in [0, 1].

    images ``[B, T, C, H, W]`` and labels ``[B, T]`` (int64 in 0..N−1) with T = S·N·K: the
    segments back to back, then padding where training dropped images (``valid`` False).
    segment ``[B, T]``: which segment each step belongs to (−1: padding).
    instance ``[B, T]``: how many images of the same label its segment showed before (0: the
    first instance of the class).
    query_images ``[B, S, N·Q, C, H, W]``, query_labels ``[B, S, N·Q]``: queries of each segment.
    domains ``[B, S]``: the data set of each segment; classes ``[B, S, N]``: the class behind
    label j in that data set's split; index ``[B]``: the stream numbers.
    """

    images: torch.Tensor
    labels: torch.Tensor
    valid: torch.Tensor
    segment: torch.Tensor
    instance: torch.Tensor
    query_images: torch.Tensor
    query_labels: torch.Tensor
    domains: torch.Tensor
    classes: torch.Tensor
    index: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Stream:
        return Stream(**{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                         for f in fields(self)})

    def pin_memory(self) -> Stream:
        """Used by ``DataLoader(pin_memory=True)``."""
        return Stream(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    def __len__(self) -> int:
        return len(self.index)


def fit_shape(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """``[n, C, H, W]`` float images → ``[n, *shape]``: channels repeated (1 → C) or averaged
    (C → 1), then bilinear resizing with antialiasing to (H, W)."""
    c, h, w = shape
    if images.shape[1] != c:
        if images.shape[1] == 1:
            images = images.expand(-1, c, -1, -1)
        elif c == 1:
            images = images.mean(1, keepdim=True)
        else:
            raise UserError(f"cannot bring {images.shape[1]}-channel images to {c} channels")
    if tuple(images.shape[2:]) != (h, w) and len(images):
        images = F.interpolate(images, size=(h, w), mode="bilinear", antialias=True,
                               align_corners=False)
    return images.contiguous()


class StreamSampler(SeededSampler):
    """Streams of ``segments`` N-way segments over ``domains``; stream i depends only on (seed, i).

    Args:
        domains: the data sets (splits) segments are drawn from.
        n_way: N, classes per segment; k_shot: K, images per class in the stream.
        n_query: Q, query images per class kept aside after each segment.
        segments: S, segments per stream.
        plans: the possible domain sequences, each a tuple of S indices into ``domains``; stream i
            takes one at random. Default: every ordering of the domains when S equals their
            number (A→B and B→A), else domain 0 for every segment.
        max_trim: drop the last ``r ∈ [0, max_trim]`` images of each segment (drawn per stream
            and segment; 0: none).
        image_shape: ``(C, H, W)`` of the stream (default: the height and width of
            ``domains[0]`` and the most channels of any domain).
    """

    def __init__(
        self,
        domains: Sequence[FewShotDataset],
        n_way: int,
        k_shot: int,
        *,
        n_query: int = 0,
        segments: int = 1,
        plans: Sequence[Sequence[int]] | None = None,
        max_trim: int = 0,
        image_shape: tuple[int, int, int] | None = None,
        seed: int = 0,
    ) -> None:
        for name, value, least in (("n_way", n_way, 1), ("k_shot", k_shot, 1),
                                   ("n_query", n_query, 0), ("segments", segments, 1),
                                   ("max_trim", max_trim, 0), ("seed", seed, 0)):
            if int(value) != value or value < least:
                raise UserError(f"{name} must be an integer >= {least}, got {value}")
        if not domains:
            raise UserError("a stream needs at least one data set")
        if max_trim >= n_way * k_shot:
            raise UserError(
                f"max_trim {max_trim} would drop a whole segment of N·K = {n_way * k_shot} "
                "images; lower --max-trim"
            )
        if plans is None:
            if segments == len(domains) == 2:
                plans = [(0, 1), (1, 0)]
            elif segments == len(domains):
                plans = [tuple(range(segments))]
            else:
                plans = [(0,) * segments]
        self.plans = [tuple(int(d) for d in plan) for plan in plans]
        for plan in self.plans:
            if len(plan) != segments or not all(0 <= d < len(domains) for d in plan):
                raise UserError(f"plan {plan} needs {segments} indices into {len(domains)} domains")
        for d, dataset in enumerate(domains):
            uses = max(plan.count(d) for plan in self.plans)
            if uses:
                dataset.check_episode(n_way * uses, k_shot + n_query)
        self.domains = list(domains)
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.segments, self.max_trim, self.seed = segments, max_trim, seed
        channels = max(dataset.image_shape[0] for dataset in domains)
        self.image_shape = tuple(image_shape or (channels, *domains[0].image_shape[1:]))
        self.next_episode = 0

    @property
    def length(self) -> int:
        """T = S·N·K, the steps of an untrimmed stream."""
        return self.segments * self.n_way * self.k_shot

    def _draw(self, i: int) -> list[dict]:
        """Stream i: per segment its domain, classes [N], image positions [N, K+Q], the order of
        the stream images and of the queries, and how many images to drop at its end."""
        n, k, q = self.n_way, self.k_shot, self.n_query
        rng = np.random.default_rng([self.seed, i])
        plan = self.plans[int(rng.integers(len(self.plans)))]
        used: dict[int, set[int]] = {}
        segments = []
        for d in plan:
            counts = self.domains[d].class_counts
            free = np.setdiff1d(np.arange(len(counts)), sorted(used.get(d, ())))
            classes = rng.choice(free, size=n, replace=False).astype(np.int64)
            used.setdefault(d, set()).update(classes.tolist())
            keys = rng.random((n, int(counts[classes].max())))
            keys[np.arange(keys.shape[1]) >= counts[classes][:, None]] = 2.0
            positions = np.argsort(keys, axis=1)[:, : k + q]
            segments.append({
                "domain": d, "classes": classes, "positions": positions,
                "order": rng.permutation(n * k), "query_order": rng.permutation(n * q),
                "trim": int(rng.integers(self.max_trim + 1)) if self.max_trim else 0,
            })
        return segments

    def _images(self, d: int, classes: np.ndarray, positions: np.ndarray) -> torch.Tensor:
        return fit_shape(self.domains[d].gather(classes, positions), self.image_shape)

    def batch(self, indices: Sequence[int]) -> Stream:
        """Streams ``indices``, stacked along the batch dimension."""
        indices = [int(i) for i in indices]
        if not indices:
            raise UserError("a batch needs at least one stream; use batch_size >= 1")
        n, k, q, S, T = self.n_way, self.k_shot, self.n_query, self.segments, self.length
        B = len(indices)
        images = torch.zeros(B, T, *self.image_shape)
        labels = torch.zeros(B, T, dtype=torch.int64)
        segment = torch.full((B, T), -1, dtype=torch.int64)
        instance = torch.zeros(B, T, dtype=torch.int64)
        query_images = torch.zeros(B, S, n * q, *self.image_shape)
        query_labels = torch.zeros(B, S, n * q, dtype=torch.int64)
        domains = torch.zeros(B, S, dtype=torch.int64)
        classes = torch.zeros(B, S, n, dtype=torch.int64)
        for b, i in enumerate(indices):
            start = 0
            for s, seg in enumerate(self._draw(i)):
                d, cls, pos = seg["domain"], seg["classes"], seg["positions"]
                domains[b, s], classes[b, s] = d, torch.from_numpy(cls)
                # Label-major [N, K] flattened, then shuffled by the segment's order.
                seg_labels = np.repeat(np.arange(n), k)[seg["order"]]
                seg_pos = pos[:, :k].reshape(-1)[seg["order"]]
                keep = n * k - seg["trim"]
                seg_labels, seg_pos = seg_labels[:keep], seg_pos[:keep]
                stop = start + keep
                images[b, start:stop] = self._images(d, cls[seg_labels], seg_pos)
                labels[b, start:stop] = torch.from_numpy(seg_labels)
                segment[b, start:stop] = s
                seen = np.zeros(n, np.int64)
                for t, label in enumerate(seg_labels.tolist()):
                    instance[b, start + t] = seen[label]
                    seen[label] += 1
                if q:
                    q_labels = np.repeat(np.arange(n), q)[seg["query_order"]]
                    q_pos = pos[:, k:].reshape(-1)[seg["query_order"]]
                    query_images[b, s] = self._images(d, cls[q_labels], q_pos)
                    query_labels[b, s] = torch.from_numpy(q_labels)
                start = stop
        return Stream(
            images=images, labels=labels, valid=segment >= 0, segment=segment,
            instance=instance, query_images=query_images, query_labels=query_labels,
            domains=domains, classes=classes, index=torch.tensor(indices, dtype=torch.int64),
        )
