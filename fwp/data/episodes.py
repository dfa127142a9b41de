"""Sequential N-way K-shot episodes, each a pure function of (seed, episode index).

Episode ``i`` draws, from ``numpy.random.default_rng([seed, i])``: N distinct classes in random
order (class ``classes[j]`` gets label ``j``, so the class -> label map is random per episode),
then K + K' + Q distinct images per class, which become K support, K' extra ("future" shots for
bootstrapped training, seed paper §2.2) and Q query images; support, extra and query are each
shuffled. Because nothing depends on earlier episodes, evaluation episodes are the same in every
run, process and worker count, and resuming training is restoring one counter.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from fwp.data.dataset import FewShotDataset
from fwp.errors import UserError


@dataclass
class Episode:
    """A batch of B episodes; images are float32 in [0, 1].

    support_images ``[B, N*K, C, H, W]``, support_labels ``[B, N*K]`` (int64 in 0..N-1);
    extra_images ``[B, N*K', C, H, W]``, extra_labels ``[B, N*K']``;
    query_images ``[B, N*Q, C, H, W]``, query_labels ``[B, N*Q]``;
    classes ``[B, N]``: the split's class index behind label j; index ``[B]``: episode numbers.
    """

    support_images: torch.Tensor
    support_labels: torch.Tensor
    extra_images: torch.Tensor
    extra_labels: torch.Tensor
    query_images: torch.Tensor
    query_labels: torch.Tensor
    classes: torch.Tensor
    index: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Episode:
        return Episode(
            **{
                f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                for f in fields(self)
            }
        )

    def pin_memory(self) -> Episode:
        """Used by ``DataLoader(pin_memory=True)``."""
        return Episode(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    def __len__(self) -> int:
        return len(self.index)


class SeededSampler:
    """A sampler whose item ``i`` is a pure function of (seed, i), so that its whole state is
    the next index: ``sample(B)`` returns the next B items (``batch(range(...))``) and advances
    ``next_episode``; ``state_dict`` / ``load_state_dict`` save and restore it."""

    seed: int
    next_episode: int

    def batch(self, indices: Sequence[int]) -> Any:  # an Episode or a Stream
        raise NotImplementedError

    def sample(self, batch_size: int) -> Any:
        """The next ``batch_size`` items."""
        start = self.next_episode
        self.next_episode += batch_size
        return self.batch(range(start, start + batch_size))

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "next_episode": self.next_episode}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["seed"] != self.seed:
            raise UserError(
                f"this sampler has seed {self.seed} but the saved state has {state['seed']}; "
                "resume with the run's original seed"
            )
        self.next_episode = int(state["next_episode"])


class EpisodeSampler(SeededSampler):
    """N-way K-shot episodes of a ``FewShotDataset``; episode ``i`` depends only on (seed, i).

    ``sample(B)`` returns the next B episodes and advances a counter (``state_dict`` /
    ``load_state_dict`` save and restore it); ``episode(i)`` and ``batch(indices)`` return given
    episodes without touching it.
    """

    def __init__(
        self,
        dataset: FewShotDataset,
        n_way: int,
        k_shot: int,
        n_query: int = 1,
        k_extra: int = 0,
        seed: int = 0,
    ) -> None:
        for name, value, least in (
            ("n_way", n_way, 1),
            ("k_shot", k_shot, 1),
            ("n_query", n_query, 0),
            ("k_extra", k_extra, 0),
            ("seed", seed, 0),
        ):
            if int(value) != value or value < least:
                raise UserError(f"{name} must be an integer >= {least}, got {value}")
        dataset.check_episode(n_way, k_shot + k_extra + n_query)
        self.dataset = dataset
        self.n_way, self.k_shot, self.n_query, self.k_extra = n_way, k_shot, n_query, k_extra
        self.seed = seed
        self.next_episode = 0

    def episode(self, i: int) -> Episode:
        """Episode ``i`` alone (batch dimension 1)."""
        return self.batch([i])

    def _draw(self, i: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Episode i as (classes [N], image positions [N, M], orders of support/extra/query)."""
        n, m = self.n_way, self.k_shot + self.k_extra + self.n_query
        rng = np.random.default_rng([self.seed, i])
        counts = self.dataset.class_counts
        classes = rng.choice(len(counts), size=n, replace=False).astype(np.int64)
        # M distinct positions per class: the M smallest of random keys, positions past a class's
        # size keyed out.
        keys = rng.random((n, int(counts[classes].max())))
        keys[np.arange(keys.shape[1]) >= counts[classes][:, None]] = 2.0
        positions = np.argsort(keys, axis=1)[:, :m]
        orders = [rng.permutation(n * size) for size in (self.k_shot, self.k_extra, self.n_query)]
        return classes, positions, orders

    def batch(self, indices: Sequence[int]) -> Episode:
        """Episodes ``indices``, stacked along the batch dimension."""
        indices = [int(i) for i in indices]
        if not indices:
            raise UserError("a batch needs at least one episode; use batch_size >= 1")
        draws = [self._draw(i) for i in indices]
        classes = np.stack([classes for classes, _, _ in draws])  # [B, N]
        sizes = (self.k_shot, self.k_extra, self.n_query)
        starts = (0, self.k_shot, self.k_shot + self.k_extra)
        tensors = []
        for part, (start, size) in enumerate(zip(starts, sizes)):
            # Label-major [N, size] flattened, then shuffled by the episode's order.
            labels = np.stack(
                [np.repeat(np.arange(self.n_way), size)[orders[part]] for _, _, orders in draws]
            )
            positions = np.stack(
                [pos[:, start : start + size].reshape(-1)[orders[part]] for _, pos, orders in draws]
            )
            images = self.dataset.gather(np.take_along_axis(classes, labels, axis=1), positions)
            tensors += [images, torch.from_numpy(labels)]
        return Episode(
            *tensors,
            classes=torch.from_numpy(classes),
            index=torch.tensor(indices, dtype=torch.int64),
        )


class EpisodeStream(torch.utils.data.IterableDataset):
    """Batches ``sampler.batch(range(start + j·stride, start + j·stride + B))`` for j = 0, 1, ...
    (``stride`` defaults to B: consecutive batches; a rank of a torchrun world takes its block of
    every ``world · B`` episodes with ``stride = world · B``).

    For ``DataLoader(stream, batch_size=None, num_workers=W)``: worker w makes batches j = w mod W,
    and the loader returns them in order of j, so the stream is the same for every W. Works for
    any :class:`SeededSampler` (episodes or streams). ``num_batches=None`` streams for ever.
    """

    def __init__(
        self,
        sampler: SeededSampler,
        batch_size: int,
        start: int = 0,
        num_batches: int | None = None,
        stride: int | None = None,
    ) -> None:
        self.sampler, self.batch_size, self.start, self.num_batches = (
            sampler,
            batch_size,
            start,
            num_batches,
        )
        self.stride = batch_size if stride is None else stride

    def __iter__(self) -> Iterator[Any]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        j = worker
        while self.num_batches is None or j < self.num_batches:
            first = self.start + j * self.stride
            yield self.sampler.batch(range(first, first + self.batch_size))
            j += workers


def _leave_signals_to_the_parent(worker_id: int) -> None:
    """A data worker ignores SIGINT and SIGTERM: Ctrl-C reaches the whole process group, and a
    worker ended by it would fail the step that the training process finishes before saving.
    The training process ends its workers when it stops; a worker whose parent died exits on
    its own (torch's watchdog)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class Prefetcher:
    """The batches of :class:`EpisodeStream` made ahead by ``workers`` processes, each keeping
    ``prefetch`` batches ready, copied into pinned memory when ``pin_memory`` (for a CUDA
    device: the copy to it can then overlap the step). The same batches, in the same order, as
    ``sampler.batch`` in the training process, since a batch depends only on its indices; so a
    run resumes exactly by starting a new one at the sampler's saved position.

    The loader gets its own generator: starting it leaves the global RNG (dropout's) untouched.
    :meth:`close` ends the workers (also on an exception or a signal: call it in ``finally``).
    """

    def __init__(self, sampler: SeededSampler, batch_size: int, *, start: int, stride: int,
                 workers: int, prefetch: int, pin_memory: bool) -> None:
        loader = torch.utils.data.DataLoader(
            EpisodeStream(sampler, batch_size, start, stride=stride), batch_size=None,
            num_workers=workers, prefetch_factor=prefetch, pin_memory=pin_memory,
            generator=torch.Generator().manual_seed(0),
            worker_init_fn=_leave_signals_to_the_parent,
        )
        self._batches: Any = iter(loader)
        self.next_first = start  # the first index of the next batch
        self.stride = stride

    def next(self, first: int) -> Any:
        """The batch that starts at episode ``first``; it must be the stream's next one."""
        if first != self.next_first:
            raise RuntimeError(f"the prefetched stream is at episode {self.next_first}, "
                               f"not {first}: its sampler moved without it")
        self.next_first += self.stride
        return next(self._batches)

    def close(self) -> None:
        if self._batches is not None:
            self._batches._shutdown_workers()  # torch's own shutdown, what __del__ would do
            self._batches = None
