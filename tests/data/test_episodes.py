import numpy as np
import pytest
import torch

from fwp.data import EpisodeSampler, EpisodeStream, FewShotDataset
from fwp.errors import UserError


def numbered_dataset(classes: int = 8, per_class: int = 6) -> FewShotDataset:
    """Image i has pixel (0, 0) = i: episodes can be decoded back to image numbers."""
    n = classes * per_class
    images = np.zeros((n, 4, 4, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    counts = np.full(classes, per_class)
    starts = np.arange(classes) * per_class
    return FewShotDataset(
        images, [f"c{c}" for c in range(classes)], starts, counts, name="numbered", split="train"
    )


def image_numbers(images: torch.Tensor) -> np.ndarray:
    return np.rint(images[..., 0, 0, 0].numpy() * 255).astype(int)


def test_shapes_labels_and_distinct_images():
    dataset = numbered_dataset()
    episode = EpisodeSampler(dataset, n_way=3, k_shot=2, n_query=2, k_extra=1, seed=5).sample(4)
    assert episode.support_images.shape == (4, 6, 1, 4, 4)
    assert episode.extra_images.shape == (4, 3, 1, 4, 4)
    assert episode.query_images.shape == (4, 6, 1, 4, 4)
    assert episode.support_labels.dtype == torch.int64 and episode.classes.shape == (4, 3)
    for b in range(4):
        numbers = np.concatenate(
            [
                image_numbers(getattr(episode, f"{p}_images")[b])
                for p in ("support", "extra", "query")
            ]
        )
        assert len(set(numbers)) == len(numbers)  # all images of an episode distinct
        for part, per_label in (("support", 2), ("extra", 1), ("query", 2)):
            labels = getattr(episode, f"{part}_labels")[b].numpy()
            assert sorted(labels) == sorted(list(range(3)) * per_label)
            # every image with label j comes from class classes[j]
            owner = image_numbers(getattr(episode, f"{part}_images")[b]) // 6
            assert np.array_equal(owner, episode.classes[b].numpy()[labels])


def test_labels_and_support_order_are_random_per_episode():
    sampler = EpisodeSampler(numbered_dataset(classes=3), n_way=3, k_shot=2, seed=0)
    episodes = sampler.batch(range(40))
    assert len({tuple(c) for c in episodes.classes.tolist()}) > 3  # class -> label varies
    assert len({tuple(s) for s in episodes.support_labels.tolist()}) > 3  # support order varies


def test_episodes_are_a_function_of_seed_and_index():
    dataset = numbered_dataset()
    a = EpisodeSampler(dataset, 5, 1, seed=7)
    b = EpisodeSampler(dataset, 5, 1, seed=7)
    first = a.sample(6)
    assert torch.equal(first.support_images, b.batch(range(6)).support_images)
    assert torch.equal(first.query_images[3:4], b.episode(3).query_images)
    assert not torch.equal(first.classes, EpisodeSampler(dataset, 5, 1, seed=8).sample(6).classes)


def test_resume_from_state_dict():
    dataset = numbered_dataset()
    straight = EpisodeSampler(dataset, 4, 2, seed=3)
    straight.sample(5)
    expected = straight.sample(5)
    resumed = EpisodeSampler(dataset, 4, 2, seed=3)
    resumed.load_state_dict({"seed": 3, "next_episode": 5})
    assert torch.equal(resumed.sample(5).support_images, expected.support_images)
    with pytest.raises(UserError, match="seed"):
        resumed.load_state_dict({"seed": 4, "next_episode": 0})


@pytest.mark.parametrize("workers", [0, 2])
def test_evaluation_episodes_do_not_depend_on_worker_count(workers):
    sampler = EpisodeSampler(numbered_dataset(), 5, 1, n_query=1, seed=11)
    loader = torch.utils.data.DataLoader(
        EpisodeStream(sampler, batch_size=3, num_batches=5), batch_size=None, num_workers=workers
    )
    batches = list(loader)
    assert [b.index.tolist() for b in batches] == [list(range(i, i + 3)) for i in range(0, 15, 3)]
    reference = sampler.batch(range(15))
    assert torch.equal(torch.cat([b.query_images for b in batches]), reference.query_images)
    assert torch.equal(torch.cat([b.support_labels for b in batches]), reference.support_labels)


def test_impossible_episodes_fail_before_any_work():
    dataset = numbered_dataset(classes=4, per_class=5)
    with pytest.raises(UserError, match="N = 5 .* only 4 classes"):
        EpisodeSampler(dataset, n_way=5, k_shot=1)
    with pytest.raises(UserError, match=r"K \+ K' \+ Q = 6 .* has only 5"):
        EpisodeSampler(dataset, n_way=2, k_shot=3, k_extra=1, n_query=2)
    with pytest.raises(UserError, match="k_shot must be an integer >= 1"):
        EpisodeSampler(dataset, n_way=2, k_shot=0)


def test_uneven_classes_draw_only_existing_images():
    images = np.zeros((9, 2, 2, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(9)
    dataset = FewShotDataset(images, ["a", "b", "c"], np.array([0, 2, 5]), np.array([2, 3, 4]))
    episode = EpisodeSampler(dataset, 3, 1, n_query=1).batch(range(50))
    numbers = image_numbers(torch.cat([episode.support_images, episode.query_images], 1))
    owners = np.searchsorted([0, 2, 5], numbers, side="right") - 1
    labels = torch.cat([episode.support_labels, episode.query_labels], 1).numpy()
    assert np.array_equal(owners, np.take_along_axis(episode.classes.numpy(), labels, 1))
