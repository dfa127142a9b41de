"""Paired comparisons of two training configs: is the difference a gain, a loss, or noise?
Shared by every workflow's sweep report.

Two configs (e.g. bootstrapping off / on: β2 = 0 and β2 > 0) are trained with the same seeds and
evaluated on the same fixed test episodes, so their accuracies pair up twice:

- over seeds: d_s = acc_on(s) − acc_off(s), s = 1 … S, and the 95 % Student-t interval
  d̄ ± t_{0.975, S−1} · sd(d) / √S. This is the interval the verdict uses: it includes the
  randomness of training (initialisation, episode stream), which is what a user re-running the
  comparison meets.
- over episodes: e_j = mean over seeds of (acc_on(s, j) − acc_off(s, j)), j = 1 … E, and the
  normal interval ē ± 1.96 · sd(e) / √E. It only holds the test episodes' sampling noise for these
  very trained models; narrower, and shown for comparison.

Verdict: "gain" when the seed interval lies above 0, "loss" when below, else "no detectable
difference" (the same as the paired t-test's two-sided p < 0.05). When every seed gives the same
difference (common with accuracies on a small test set: one test example is a fixed step), the t
statistic is undefined and the interval has zero width; the p-value is then the exact sign-flip
test's, 2^(1−S) (0.25 for 3 seeds: three equal signs are what chance gives one time in four), and
the verdict follows that p, not the zero-width interval.

A report makes many such comparisons (pairs × K_test): :func:`holm` adjusts their p-values
(Holm 1979, step-down Bonferroni) so that the chance of any false "gain" or "loss" among them
stays at 5 %; :func:`holm_verdicts` gives the verdicts that follow. :func:`seeds_needed` says how
many seeds the measured spread of the paired differences needs to detect a given difference
(two-sided α = 0.05, power 0.8, from the t quantiles:
n ≥ ((t_{1−α/2, n−1} + t_{power, n−1}) · sd / δ)², the smallest such n).
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
        """gain / loss when the two-sided p is below 0.05 (the t interval's verdict, except when
        every seed gives the same difference: see the module's docstring)."""
        if len(self.per_seed) < 2 or self.p_value >= 0.05:
            return NO_DIFFERENCE
        return GAIN if self.over_seeds.mean > 0 else LOSS

    @property
    def sd(self) -> float:
        """Standard deviation (n − 1) of the per-seed differences (NaN for one seed)."""
        return float(np.std(self.per_seed, ddof=1)) if len(self.per_seed) > 1 else math.nan

    @property
    def p_value(self) -> float:
        """Two-sided p of the paired t-test that the mean difference is 0 (1 for one seed; the
        exact sign-flip test's 2^(1−n) when all n differences are equal and not 0)."""
        n, mean, sd = len(self.per_seed), self.over_seeds.mean, self.sd
        if n < 2:
            return 1.0
        if sd == 0.0:
            return min(1.0, 2.0 ** (1 - n)) if mean != 0.0 else 1.0
        t = abs(mean) / (sd / math.sqrt(n))
        return min(1.0, 2.0 * (1.0 - t_cdf(t, n - 1)))


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


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given: sorted ascending, p_(i) · (m − i + 1) made
    non-decreasing and capped at 1 (i = 1 … m)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, p_values[i] * (len(p_values) - rank)))
        adjusted[i] = running
    return adjusted


def holm_verdicts(differences: Sequence[PairedDifference], alpha: float = 0.05
                  ) -> list[tuple[float, str]]:
    """(Holm-adjusted p, verdict) of each comparison of a report, all of them one family."""
    adjusted = holm([d.p_value for d in differences])
    out = []
    for d, p in zip(differences, adjusted):
        verdict = NO_DIFFERENCE
        if p < alpha and len(d.per_seed) > 1:
            verdict = GAIN if d.over_seeds.mean > 0 else LOSS
        out.append((p, verdict))
    return out


def seeds_needed(sd: float, delta: float = 3.0, alpha: float = 0.05, power: float = 0.8,
                 limit: int = 10_000) -> int | None:
    """Seeds for a paired comparison whose per-seed differences spread by ``sd`` to detect a
    mean difference of ``delta`` (two-sided ``alpha``, ``power``); None beyond ``limit`` or when
    ``sd`` is unknown (one seed)."""
    if not math.isfinite(sd):
        return None
    for n in range(2, limit + 1):
        t_sum = t_quantile(1.0 - alpha / 2, n - 1) + t_quantile(power, n - 1)
        if n >= (t_sum * sd / delta) ** 2:
            return n
    return None
