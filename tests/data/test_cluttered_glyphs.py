import numpy as np
import pytest

from fwp.data import EpisodeSampler, load_dataset
from fwp.data.cluttered_glyphs import render_sample
from fwp.data.glyphs import SCRIPTS, glyph_classes
from fwp.errors import UserError


@pytest.fixture(scope="module")
def splits():
    return {
        s: load_dataset("cluttered_glyphs", split=s, samples_per_class=2)
        for s in ("train", "val", "test")
    }


def test_classes_and_script_splits_are_those_of_glyphs(splits):
    glyphs = glyph_classes()
    for split, dataset in splits.items():
        assert dataset.num_classes == sum(g.split == split for g in glyphs)
        assert all(SCRIPTS[script][0] == split for script in dataset.class_groups)
        assert dataset.image_shape == (3, 28, 28)
    names = [set(d.class_names) for d in splits.values()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])


def test_samples_are_a_function_of_class_index_seed_and_options(splits):
    glyph = glyph_classes()[0]
    a = render_sample(glyph, 1, seed=0)
    assert a.shape == (28, 28, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_sample(glyph, 1, seed=0))
    for other in (render_sample(glyph, 0, seed=0), render_sample(glyph, 1, seed=1),
                  render_sample(glyph, 1, seed=0, distractors=0),
                  render_sample(glyph, 1, seed=0, colour=True)):
        assert not np.array_equal(a, other)
    # the cache holds those very samples
    assert np.array_equal(splits["train"].gather_uint8(np.array(0), np.array(1)), a)
    assert render_sample(glyph, 1, seed=0, image_size=16).shape == (16, 16, 3)


def test_colour_carries_no_class_information():
    # With colour: the mean colour of one class's samples varies more than between classes.
    glyphs = glyph_classes()[:4]
    means = np.array([[render_sample(g, s, seed=0, colour=True).reshape(-1, 3).mean(0)
                       for s in range(6)]
                      for g in glyphs])
    within = means.std(axis=1).mean()
    between = means.mean(axis=1).std(axis=0).mean()
    assert within > 2 * between


def test_loader_errors():
    with pytest.raises(UserError, match="no --data-root"):
        load_dataset("cluttered_glyphs", "/some/where")
    with pytest.raises(UserError, match="distractors >= 0"):
        load_dataset("cluttered_glyphs", distractors=-1)
    with pytest.raises(UserError, match="has no option"):
        load_dataset("cluttered_glyphs", rotations=True)


def test_episode_from_cluttered_glyphs(splits):
    episode = EpisodeSampler(splits["test"], 5, 1, n_query=1).sample(2)
    assert episode.support_images.shape == (2, 5, 3, 28, 28)
    assert 0.0 <= episode.support_images.min() and episode.support_images.max() <= 1.0
