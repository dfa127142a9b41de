"""Streams of task segments: seeded, switching where they say, a fresh label map per segment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fwp.data import FewShotDataset
from fwp.data.streams import StreamSampler, fit_shape
from fwp.errors import UserError


def coded(domain: int, classes: int, per_class: int, size: int = 6, channels: int = 1
          ) -> FewShotDataset:
    """Images whose pixels say where they come from: (0, 0) = 10·domain + 1, (0, 1) = class,
    (0, 2) = index within the class."""
    images = np.zeros((classes * per_class, size, size, channels), np.uint8)
    for c in range(classes):
        for i in range(per_class):
            images[c * per_class + i, 0, :3] = np.array([10 * domain + 1, c, i])[:, None]
    return FewShotDataset(images, [f"d{domain}c{c}" for c in range(classes)],
                          np.arange(classes) * per_class, np.full(classes, per_class),
                          name=f"d{domain}", split="train")


def decode(images: torch.Tensor) -> np.ndarray:
    """``[..., C, H, W]`` → ``[..., 3]`` (domain, class, index) read back from the pixels."""
    pixels = torch.round(images[..., 0, 0, :3] * 255).long().numpy()
    return np.stack([(pixels[..., 0] - 1) // 10, pixels[..., 1], pixels[..., 2]], -1)


def test_streams_are_seeded_and_independent_of_batching():
    sampler = StreamSampler([coded(0, 9, 5), coded(1, 7, 5)], 3, 4, n_query=1, segments=2,
                            max_trim=3, seed=5)
    whole = sampler.batch(range(6))
    again = StreamSampler([coded(0, 9, 5), coded(1, 7, 5)], 3, 4, n_query=1, segments=2,
                          max_trim=3, seed=5).batch([4, 5])
    for name in ("images", "labels", "valid", "segment", "instance", "query_images",
                 "query_labels", "domains", "classes"):
        assert torch.equal(getattr(whole, name)[4:], getattr(again, name)), name
    other = StreamSampler([coded(0, 9, 5), coded(1, 7, 5)], 3, 4, n_query=1, segments=2,
                          max_trim=3, seed=6).batch(range(6))
    assert not torch.equal(whole.images, other.images)


def test_segments_switch_where_they_say_with_a_fresh_label_map():
    n, k, trim = 3, 4, 5
    sampler = StreamSampler([coded(0, 9, 6), coded(1, 8, 6)], n, k, n_query=2, segments=2,
                            max_trim=trim, seed=1)
    stream = sampler.batch(range(40))
    source = decode(stream.images)
    assert sorted({tuple(d) for d in stream.domains.tolist()}) == [(0, 1), (1, 0)]
    lengths = set()
    for b in range(len(stream)):
        seg = stream.segment[b].numpy()
        kept = [int((seg == s).sum()) for s in (0, 1)]
        lengths.add(kept[0])
        assert all(n * k - trim <= m <= n * k for m in kept)
        # Segment 0, then segment 1 right after it, then padding.
        expected = np.r_[np.zeros(kept[0]), np.ones(kept[1]), -np.ones(2 * n * k - sum(kept))]
        assert np.array_equal(seg, expected)
        assert torch.equal(stream.valid[b], stream.segment[b] >= 0)
        for s in (0, 1):
            steps = seg == s
            domain, classes = int(stream.domains[b, s]), stream.classes[b, s].numpy()
            labels = stream.labels[b][torch.from_numpy(steps)].numpy()
            # Every image of segment s comes from its domain, and label j is its class j.
            assert (source[b][steps][:, 0] == domain).all()
            assert np.array_equal(source[b][steps][:, 1], classes[labels])
            q = decode(stream.query_images[b, s])
            assert (q[:, 0] == domain).all()
            assert np.array_equal(q[:, 1], classes[stream.query_labels[b, s].numpy()])
            # Queries are other images of the segment's classes than those streamed.
            streamed = {tuple(x) for x in source[b][steps]}
            assert not streamed & {tuple(x) for x in q}
            # instance = how often the label came before within the segment.
            for t, label in zip(np.flatnonzero(steps), labels):
                before = labels[: t - np.flatnonzero(steps)[0]]
                assert stream.instance[b, t] == (before == label).sum()
        if stream.domains[b, 0] == stream.domains[b, 1]:
            assert not set(stream.classes[b, 0].tolist()) & set(stream.classes[b, 1].tolist())
    assert len(lengths) > 1  # the switch moves from stream to stream
    # The label map of segment 1 is drawn afresh: label 0 is not tied to segment 0's label 0.
    same_domain = [b for b in range(len(stream)) if stream.domains[b, 1] == 0]
    firsts = {int(stream.classes[b, 1, 0]) for b in same_domain}
    assert len(firsts) > 2


def test_one_domain_two_segments_never_share_a_class():
    sampler = StreamSampler([coded(0, 6, 4)], 3, 2, segments=2, seed=0)
    assert sampler.plans == [(0, 0)]
    stream = sampler.batch(range(30))
    for b in range(30):
        assert not set(stream.classes[b, 0].tolist()) & set(stream.classes[b, 1].tolist())
    with pytest.raises(UserError, match="only 6"):
        StreamSampler([coded(0, 6, 4)], 4, 2, segments=2)


def test_untrimmed_segments_are_class_balanced():
    stream = StreamSampler([coded(0, 9, 5)], 3, 4, seed=3).batch(range(8))
    assert stream.valid.all()
    for b in range(8):
        assert torch.bincount(stream.labels[b], minlength=3).tolist() == [4, 4, 4]
        assert sorted(stream.instance[b].tolist()) == sorted(list(range(4)) * 3)


def test_fit_shape():
    grey = torch.rand(2, 1, 8, 8)
    assert torch.equal(fit_shape(grey, (1, 8, 8)), grey)
    rgb = fit_shape(grey, (3, 4, 4))
    assert rgb.shape == (2, 3, 4, 4) and torch.equal(rgb[:, 0], rgb[:, 2])
    flat = fit_shape(torch.full((1, 1, 8, 8), 0.25), (1, 5, 5))
    assert torch.allclose(flat, torch.full((1, 1, 5, 5), 0.25))
    assert fit_shape(torch.rand(2, 3, 8, 8), (1, 8, 8)).shape == (2, 1, 8, 8)
    # Streams mix domains: every image is fitted to the first domain's size, the most channels.
    stream = StreamSampler([coded(0, 5, 3, size=6), coded(1, 5, 3, size=12, channels=3)], 2, 2,
                           segments=2, seed=0).batch(range(2))
    assert stream.images.shape == (2, 8, 3, 6, 6)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_trim": 6}, "max_trim 6 would drop a whole segment"),
    ({"k_shot": 0}, "k_shot must be an integer >= 1"),
    ({"plans": [(0, 2)], "segments": 2}, "plan (0, 2) needs 2 indices"),
])
def test_bad_streams_are_refused(kwargs, message):
    settings = {"n_way": 3, "k_shot": 2, **kwargs}
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        StreamSampler([coded(0, 6, 4)], **settings)
