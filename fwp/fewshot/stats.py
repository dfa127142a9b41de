"""Paired comparisons of two training configs: is the difference a gain, a loss, or noise?

Two configs that differ only in β2 (bootstrapping off / on) are trained with the same seeds and
evaluated on the same fixed test episodes, so their accuracies pair up twice:

- over seeds: d_s = acc_on(s) − acc_off(s), s = 1 … S, and the 95 % Student-t interval
  d̄ ± t_{0.975, S−1} · sd(d) / √S. This is the interval the verdict uses: it includes the
  randomness of training (initialisation, episode stream), which is what a user re-running the
  comparison meets.
- over episodes: e_j = mean over seeds of (acc_on(s, j) − acc_off(s, j)), j = 1 … E, and the
  normal interval ē ± 1.96 · sd(e) / √E. It only holds the test episodes' sampling noise for these
  very trained models; narrower, and shown for comparison.

Verdict: "gain" when the seed interval lies above 0, "loss" when below, else "no detectable
difference".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

GAIN, NO_DIFFERENCE, LOSS = "gain", "no detectable difference", "loss"


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) (continued fraction, modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below the mean
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * result / a


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on the CDF)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if t_cdf(mid, df) < p else (low, mid)
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


@dataclass(frozen=True)
class Interval:
    """A mean with its 95 % interval [low, high] from ``n`` values."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def verdict(self) -> str:
        """gain (interval above 0), loss (below 0) or no detectable difference."""
        if self.n < 2:
            return NO_DIFFERENCE
        if self.low > 0:
            return GAIN
        if self.high < 0:
            return LOSS
        return NO_DIFFERENCE


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean ± t_{(1+c)/2, n−1} · sd / √n (sd with n − 1); infinite width for a single value."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        raise ValueError("t_interval of no values")
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, -math.inf, math.inf, 1)
    half = t_quantile(0.5 + confidence / 2, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def normal_interval(values: Sequence[float], z: float = 1.96) -> Interval:
    """Mean ± z · sd / √n: the usual 95 % interval over many test episodes."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        raise ValueError("normal_interval of no values")
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, -math.inf, math.inf, 1)
    half = z * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


@dataclass(frozen=True)
class PairedDifference:
    """``on`` − ``off`` at one K_test: per seed, over seeds and over episodes."""

    seeds: tuple[int, ...]
    per_seed: tuple[float, ...]
    over_seeds: Interval
    over_episodes: Interval | None

    @property
    def verdict(self) -> str:
        return self.over_seeds.verdict()


def paired_difference(
    off: dict[int, float],
    on: dict[int, float],
    off_episodes: dict[int, Sequence[float]] | None = None,
    on_episodes: dict[int, Sequence[float]] | None = None,
) -> PairedDifference:
    """Differences on − off over the seeds both have.

    ``off`` / ``on``: seed → mean test accuracy; ``*_episodes``: seed → accuracy per test
    episode (the same episodes, in the same order, for every run), or None to skip that interval.
    """
    seeds = tuple(sorted(set(off) & set(on)))
    if not seeds:
        raise ValueError("paired_difference: the two configs share no seed")
    per_seed = tuple(on[s] - off[s] for s in seeds)
    over_episodes = None
    if off_episodes is not None and on_episodes is not None:
        differences = np.mean(
            [np.asarray(on_episodes[s], np.float64) - np.asarray(off_episodes[s], np.float64)
             for s in seeds], axis=0,
        )
        over_episodes = normal_interval(differences)
    return PairedDifference(seeds, per_seed, t_interval(per_seed), over_episodes)
