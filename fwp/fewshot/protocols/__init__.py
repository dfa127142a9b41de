"""In-context learning settings ("protocols") of the few-shot learner, each a task: a sampler,
the image shape, a loss and an evaluation behind one interface (:class:`EpisodicTask`,
:class:`StreamTask`) that training (:mod:`fwp.fewshot.train`) and ``fwp fewshot eval`` call.

=============  ==========================================================================
``episodic``   N-way K-shot episodes, the query after the support set (seed paper Eq. 5)
``delayed``    one stream, each label given one step after its image (SRWM paper, ICML 2022)
``sequential`` a stream that switches data set part-way, with a fresh label map (same paper)
``continual``  task A then task B, queried on both (Automating Continual Learning)
=============  ==========================================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from fwp.data import FewShotDataset, load_dataset

if TYPE_CHECKING:
    from fwp.fewshot.protocols.episodic import EpisodicTask

PROTOCOLS = ("episodic", "delayed", "sequential", "continual")
STREAMS = ("delayed", "sequential", "continual")


def load_domains(config: Any, split: str, data_root: str | None = None
                 ) -> tuple[list[FewShotDataset], list[str]]:
    """Split ``split`` of the run's data set and, for ``sequential`` / ``continual`` with a
    ``second_dataset``, of the second one; and their names."""
    root = data_root if data_root is not None else config.data.data_root
    first = load_dataset(config.data.dataset, root or None, split, **config.data.data_options)
    p = config.protocol
    if p.protocol == "delayed" or not p.second_dataset:
        return [first], [config.data.dataset]
    second = load_dataset(p.second_dataset, p.second_data_root or None, split,
                          **p.second_data_options)
    return [first, second], [config.data.dataset, p.second_dataset]


class StreamTask:
    """``delayed``, ``sequential`` or ``continual``: streams of one or two N-way segments, with
    what the training loop needs: ``sampler`` (``batch(indices)``, ``next_episode``,
    ``state_dict``), ``image_shape``, ``loss`` and ``evaluate``."""

    def __init__(self, config: Any, domains: list[FewShotDataset], names: list[str], seed: int,
                 training: bool) -> None:
        from fwp.data.streams import StreamSampler

        self.config, self.names = config, names
        self.protocol = config.protocol.protocol
        continual = self.protocol == "continual"
        self.sampler = StreamSampler(
            domains, config.data.n_way, config.data.k_shot,
            n_query=config.data.n_query if continual else 0,
            segments=1 if self.protocol == "delayed" else 2,
            max_trim=config.protocol.max_trim if training and not continual else 0,
            seed=seed,
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.sampler.image_shape

    def check(self, training: bool) -> None:
        """Nothing to check here: the stream sampler checked its segments when built."""

    def loss(self, model: torch.nn.Module, stream: Any) -> tuple[torch.Tensor, dict, float]:
        # The model's methods are called directly, not its forward: no DDP (train refuses it).
        if self.protocol == "continual":
            from fwp.fewshot.protocols.continual import continual_logits, continual_loss

            logits = continual_logits(model, stream)
            loss, parts = continual_loss(
                logits, stream.query_labels,
                first_task_weight=self.config.protocol.first_task_weight,
                forget_weight=self.config.protocol.forget_weight,
            )
            accuracy = (logits["B|AB"].argmax(-1) == stream.query_labels[:, 1]).float().mean()
            return loss, parts, accuracy.item()
        from fwp.fewshot.protocols.streams import stream_logits, stream_loss

        loss, accuracy = stream_loss(stream_logits(model, stream), stream)
        return loss, {"stream": loss}, accuracy

    def evaluate(self, model: torch.nn.Module, episodes: int, *, batch_size: int = 50,
                 amp: bool = False) -> dict[str, Any]:
        if self.protocol == "continual":
            from fwp.fewshot.protocols.continual import evaluate_continual as run
        else:
            from fwp.fewshot.protocols.streams import evaluate_streams as run
        return run(model, self.sampler, episodes, domain_names=self.names,
                   batch_size=batch_size, amp=amp)


def build_task(config: Any, split: str, seed: int, *, training: bool = False,
               data_root: str | None = None) -> EpisodicTask | StreamTask:
    """The run's protocol on split ``split`` as a task (sampler, image shape, loss, evaluation),
    its episodes or streams seeded by ``seed``; ``training`` draws training episodes (K′ extra
    shots when bootstrapping) or turns on the trimming of stream segments."""
    if config.protocol.protocol == "episodic":
        from fwp.fewshot.evaluate import load_split
        from fwp.fewshot.protocols.episodic import EpisodicTask

        return EpisodicTask(config, load_split(config, split, data_root), seed, training)
    domains, names = load_domains(config, split, data_root)
    return StreamTask(config, domains, names, seed, training)
