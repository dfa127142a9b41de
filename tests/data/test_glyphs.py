import unicodedata

import numpy as np
import pytest

from fwp.data import EpisodeSampler, load_dataset
from fwp.data.glyphs import SCRIPTS, glyph_classes, render_sample


@pytest.fixture(scope="module")
def splits():
    return {
        s: load_dataset("glyphs", split=s, samples_per_class=2) for s in ("train", "val", "test")
    }


def test_at_least_1000_classes_from_at_least_10_scripts(splits):
    assert sum(d.num_classes for d in splits.values()) >= 1000
    assert len({g for d in splits.values() for g in d.class_groups}) >= 10
    assert splits["val"].num_classes >= 20 and splits["test"].num_classes >= 20


def test_splits_are_disjoint_by_script(splits):
    scripts = {s: set(d.class_groups) for s, d in splits.items()}
    assert not (
        scripts["train"] & scripts["val"]
        or scripts["train"] & scripts["test"]
        or scripts["val"] & scripts["test"]
    )
    for split, names in scripts.items():
        assert all(SCRIPTS[name][0] == split for name in names)


def test_no_accent_variants_or_look_alikes():
    glyphs = glyph_classes()
    chars = {chr(g.codepoint) for g in glyphs}
    assert not any(unicodedata.decomposition(c) for c in chars)
    assert "é" not in chars and "ø" not in chars
    # Latin A, Greek Alpha and Cyrillic A are one class; so are o and O.
    assert len(chars & {"A", "Α", "А"}) == 1 and len(chars & {"o", "O"}) == 1


def test_samples_vary_and_are_a_function_of_class_index_and_seed(splits):
    glyph = glyph_classes()[0]
    a = render_sample(glyph, 3, seed=0)
    assert a.shape == (28, 28) and a.dtype == np.uint8
    assert np.array_equal(a, render_sample(glyph, 3, seed=0))
    assert not np.array_equal(a, render_sample(glyph, 4, seed=0))
    assert not np.array_equal(a, render_sample(glyph, 3, seed=1))
    # the cached images are those same samples
    train = splits["train"]
    assert np.array_equal(
        train.gather_uint8(np.array(0), np.array(1))[..., 0], render_sample(glyph, 1, seed=0)
    )


def test_episode_from_glyphs(splits):
    episode = EpisodeSampler(splits["test"], 5, 1, n_query=1).sample(2)
    assert episode.support_images.shape == (2, 5, 1, 28, 28)
    assert 0.0 <= episode.support_images.min() and episode.support_images.max() <= 1.0
