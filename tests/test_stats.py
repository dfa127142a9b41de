import math

import numpy as np
import pytest

from fwp.stats import (
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


def test_holm_by_hand():
    from fwp.stats import holm

    # sorted 0.01, 0.03, 0.04 → 0.03, 0.06, max(0.06, 0.04); back in the given order
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_paired_p_value_agrees_with_the_interval_and_holm_verdicts():
    from fwp.stats import holm_verdicts

    off = {1: 50.0, 2: 55.0, 3: 60.0}
    gain = paired_difference(off, {1: 52.1, 2: 56.9, 3: 62.0})
    noise = paired_difference(off, {1: 52.0, 2: 53.0, 3: 60.5})
    # the 95 % interval excludes 0 exactly when p < 0.05
    assert gain.p_value < 0.05 and noise.p_value > 0.05
    # t = 2 / (0.1 / √3) with 2 degrees of freedom
    assert gain.p_value == pytest.approx(2 * (1 - t_cdf(2.0 / (0.1 / math.sqrt(3)), 2)))
    # alone, the gain stays a gain; beside 30 noisy comparisons it is adjusted away
    assert holm_verdicts([gain])[0][1] == GAIN
    marginal = paired_difference(off, {1: 52.5, 2: 56.5, 3: 62.6})
    assert marginal.verdict == GAIN
    verdicts = holm_verdicts([marginal] + [noise] * 30)
    assert verdicts[0][1] == NO_DIFFERENCE and verdicts[0][0] > marginal.p_value


@pytest.mark.parametrize(("sd", "expected"), [(3.0, 10), (6.0, 34), (0.0, 2)])
def test_seeds_needed_matches_the_power_tables(sd, expected):
    """One-sample (paired) t-test, α = 0.05 two-sided, power 0.8: effect size 1 needs 10
    pairs, 0.5 needs 34 (Cohen's tables, G*Power)."""
    from fwp.stats import seeds_needed

    assert seeds_needed(sd, delta=3.0) == expected
    assert seeds_needed(math.nan) is None and seeds_needed(1000.0, limit=50) is None


def test_equal_differences_on_every_seed_are_not_a_verdict_at_three_seeds():
    """Three seeds that all differ by one test example: zero spread, an undefined t statistic.
    The exact sign-flip test gives p = 2^(1−3) = 0.25 (no verdict); eight seeds give 2^-7."""
    from fwp.stats import holm_verdicts

    three = paired_difference({1: 98.0, 2: 97.0, 3: 99.0}, {1: 97.0, 2: 96.0, 3: 98.0})
    assert three.sd == 0.0 and three.p_value == pytest.approx(0.25)
    assert three.verdict == NO_DIFFERENCE and holm_verdicts([three])[0][1] == NO_DIFFERENCE
    eight = paired_difference({s: 90.0 for s in range(8)}, {s: 91.0 for s in range(8)})
    assert eight.p_value == pytest.approx(2.0 ** -7) and eight.verdict == GAIN
    same = paired_difference({1: 90.0, 2: 80.0}, {1: 90.0, 2: 80.0})
    assert same.p_value == 1.0 and same.verdict == NO_DIFFERENCE
