"""The ``episodic`` protocol as a task: N-way K-shot episodes (K′ extra shots per class when
bootstrapping), the loss of seed paper Eq. 5 and the accuracy on fixed validation episodes."""

from __future__ import annotations

from typing import Any

import torch

from fwp.data import Episode, EpisodeSampler, FewShotDataset
from fwp.errors import UserError
from fwp.fewshot.losses import bootstrap_loss


def episode_loss(
    net: torch.nn.Module,
    episode: Episode,
    loss: Any,
    *,
    queries: int | None = None,
    with_extra: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Eq. 5 on a batch of episodes: the learner (``net``, a :class:`FewShotLearner` or its DDP
    wrapper) reads the support set, predicts the first ``queries`` queries of each episode (None:
    all) and, ``with_extra``, again after the extra examples. Returns the loss, its terms and
    which student predictions were right."""
    query_images = episode.query_images[:, :queries]
    query_labels = episode.query_labels[:, :queries]
    extra = (episode.extra_images, episode.extra_labels) if with_extra else ()
    out = net(episode.support_images, episode.support_labels, query_images, *extra)
    value, parts = bootstrap_loss(
        out.student_logits, query_labels, out.teacher_logits,
        beta1=loss.beta1, beta2=loss.beta2, beta3=loss.beta3, distill=loss.distill,
        student_state=out.student_shifts, teacher_state=out.teacher_shifts,
    )
    return value, parts, out.student_logits.argmax(-1) == query_labels


class EpisodicTask:
    """Episodes of ``dataset``: for training (K′ extra shots when bootstrapping, ``n_query``
    queries per class), or for validation (K shots, one query per class, fixed by ``seed``)."""

    def __init__(self, config: Any, dataset: FewShotDataset, seed: int, training: bool) -> None:
        data = config.data
        self.config, self.dataset = config, dataset
        self.k_extra = config.k_extra_used if training else 0
        self.sampler = EpisodeSampler(
            dataset, data.n_way, data.k_shot, n_query=data.n_query if training else 1,
            k_extra=self.k_extra, seed=seed,
        )
        self.seed = seed
        self.queries = 1 if data.single_query else None  # the first query of each episode

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.dataset.image_shape

    def check(self, training: bool) -> None:
        """Raise unless every episode the run draws from this split fits it."""
        data = self.config.data
        shots = data.k_shot + (self.k_extra + data.n_query if training else 1)
        self.dataset.check_episode(data.n_way, shots)

    def loss(self, net: torch.nn.Module, episode: Episode) -> tuple[torch.Tensor, dict, float]:
        value, parts, correct = episode_loss(net, episode, self.config.loss,
                                             queries=self.queries,
                                             with_extra=bool(self.k_extra))
        return value, parts, correct.float().mean().item()

    def evaluate(self, model: torch.nn.Module, episodes: int, *, batch_size: int = 50,
                 amp: bool = False) -> dict[str, Any]:
        from fwp.fewshot.evaluate import evaluate

        data = self.config.data
        return evaluate(model, self.dataset, data.n_way, data.k_shot, episodes, seed=self.seed,
                        batch_size=batch_size, amp=amp, single_query=data.single_query)


def check_test_split(config: Any) -> None:
    """The test split that ``fwp fewshot eval`` reads fits an episode, where the data set has
    one (a folder with train/ and val/ only has none: nothing to check)."""
    from fwp.fewshot.evaluate import load_split

    if config.data.val_split == "test":
        return
    try:
        test_set = load_split(config, "test")
    except UserError:
        return
    test_set.check_episode(config.data.n_way, config.data.k_shot + 1)
