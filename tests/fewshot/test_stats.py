import math

import numpy as np
import pytest

from fwp.fewshot.stats import (
    GAIN,
    LOSS,
    NO_DIFFERENCE,
    normal_interval,
    paired_difference,
    t_cdf,
    t_interval,
    t_quantile,
)


@pytest.mark.parametrize(
    ("df", "expected"),
    # Student-t 97.5 % quantiles from printed tables.
    [(1, 12.7062047), (2, 4.3026527), (4, 2.7764451), (9, 2.2621572), (30, 2.0422725)],
)
def test_t_quantile_matches_the_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-6)


def test_t_cdf_known_values():
    assert t_cdf(0.0, 3) == 0.5
    assert t_cdf(-2.0, 4) == pytest.approx(0.0580583, abs=1e-7)
    assert t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/π


def test_t_interval_by_hand():
    # mean 2, sd 1, n 3: half width t_{.975,2} / √3
    interval = t_interval([1.0, 2.0, 3.0])
    half = 4.3026527 / math.sqrt(3)
    assert interval.mean == 2.0 and interval.n == 3
    assert interval.low == pytest.approx(2 - half, abs=1e-6)
    assert interval.high == pytest.approx(2 + half, abs=1e-6)
    single = t_interval([5.0])
    assert single.low == -math.inf and single.verdict() == NO_DIFFERENCE


def test_normal_interval_by_hand():
    values = np.array([0.0, 1.0] * 50)
    interval = normal_interval(values)
    assert interval.half_width == pytest.approx(1.96 * values.std(ddof=1) / 10)


def test_paired_difference_verdicts():
    off = {1: 50.0, 2: 55.0, 3: 60.0}
    # on = off + 2 ± 0.1: the seeds' spread (5 points) cancels in the pairing: a clear gain
    gain = paired_difference(off, {1: 52.1, 2: 56.9, 3: 62.0})
    assert gain.seeds == (1, 2, 3) and gain.per_seed == pytest.approx((2.1, 1.9, 2.0))
    assert gain.over_seeds.mean == pytest.approx(2.0) and gain.verdict == GAIN
    loss = paired_difference(off, {1: 47.9, 2: 53.1, 3: 58.0})
    assert loss.verdict == LOSS
    noise = paired_difference(off, {1: 52.0, 2: 53.0, 3: 60.5})
    assert noise.verdict == NO_DIFFERENCE
    assert noise.over_seeds.low < 0 < noise.over_seeds.high


def test_paired_difference_only_on_shared_seeds_and_over_episodes():
    off = {1: 50.0, 2: 60.0, 4: 0.0}
    on = {1: 51.0, 2: 61.0, 3: 99.0}
    episodes_off = {1: [0.0, 1.0, 0.0, 1.0], 2: [1.0, 1.0, 0.0, 0.0]}
    episodes_on = {1: [1.0, 1.0, 0.0, 1.0], 2: [1.0, 1.0, 1.0, 0.0]}
    result = paired_difference(off, on, episodes_off, episodes_on)
    assert result.seeds == (1, 2)
    # per-episode differences averaged over seeds: [0.5, 0, 0.5, 0]
    expected = np.array([0.5, 0.0, 0.5, 0.0])
    assert result.over_episodes.mean == pytest.approx(0.25)
    assert result.over_episodes.half_width == pytest.approx(1.96 * expected.std(ddof=1) / 2)
    # identical differences per seed: a zero-width interval above 0
    assert result.over_seeds.low == result.over_seeds.high == pytest.approx(1.0)
    with pytest.raises(ValueError):
        paired_difference({1: 0.0}, {2: 0.0})
