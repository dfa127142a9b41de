"""The published protocol's fixed data sets: bins, determinism, deduplication, generators."""

import numpy as np
import pytest

from fwp.formal.data import Bin, published_data, published_draws
from fwp.formal.languages import LANGUAGES, pcfg_dyck
from tests.formal.recognisers import RECOGNISERS, dyck1

FINITE = {"counter-2", "counter-3", "aa-star", "abab-star"}
SMALL = {"train_size": 300, "valid_size": 40, "eval_size": 40, "seed": 5}


def test_counter_bins_count_n_not_length():
    data = published_data("counter-2", "1-50", ["1-50", "51-100"], 1000, 500, 500, seed=1)
    ns = {len(s) // 2 for s in data.train}
    assert ns <= set(range(1, 51)) and len(ns) == 50  # 1,000 draws of n uniform in [1, 50]
    assert data.test("51-100") == ["a" * n + "b" * n for n in range(51, 101)]  # all of them
    assert data.test("1-50") == data.valid == ["a" * n + "b" * n for n in range(1, 51)]
    three = published_data("counter-3", "1-50", ["51-100"], 10, 10, 500, seed=1)
    assert [len(s) for s in three.test("51-100")] == [3 * n for n in range(51, 101)]
    assert LANGUAGES["counter-3"].bin_lengths(51, 52) == [153, 156]


@pytest.mark.parametrize("name", sorted(LANGUAGES))
def test_fixed_sets_are_deterministic_members_and_deduplicated(name, tmp_path):
    bins = ["1-24", "25-40"]
    data = published_data(name, "1-24", bins, **SMALL)
    again = published_data(name, "1-24", bins, **SMALL)
    assert (data.train, data.valid, data.test("1-24"), data.test("25-40")) == (
        again.train, again.valid, again.test("1-24"), again.test("25-40"))
    other = published_data(name, "1-24", bins, **{**SMALL, "seed": 6})
    lang, accepts = LANGUAGES[name], RECOGNISERS[name]
    for text, strings in [("1-24", data.train), ("1-24", data.valid),
                          *((b, data.test(b)) for b in bins)]:
        b = Bin.parse(text)
        assert all(accepts(s) and b.lo <= lang.bin_size(s) <= b.hi for s in strings)
    assert len(data.train) == SMALL["train_size"]
    for strings in (data.valid, data.test("1-24"), data.test("25-40")):
        assert len(set(strings)) == len(strings)
    if name in FINITE:
        # Few strings per bin: validation and test sets are all of them; training repeats them.
        assert data.valid == data.test("1-24") == lang.all_strings(1, 24)
        assert data.test("25-40") == lang.all_strings(25, 40)
        assert set(data.train) == set(lang.all_strings(1, 24))
    else:
        assert len(set(data.train)) == len(data.train)
        assert len(data.valid) == len(data.test("25-40")) == SMALL["valid_size"]
        parts = [set(data.train), set(data.valid), set(data.test("1-24"))]
        assert sum(map(len, parts)) == len(set.union(*parts))  # pairwise disjoint
        assert data.train != other.train
    cached = published_data(name, "1-24", bins, **SMALL, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    from_disk = published_data(name, "1-24", bins, **SMALL, cache_dir=tmp_path)
    assert (cached.train, cached.test("25-40")) == (from_disk.train, from_disk.test("25-40"))
    assert cached.train == data.train


def test_parity_lengths_follow_the_public_generator():
    """Mean length of the public rule (geometric stop, cut at hi, a final 1 for odd strings
    when it fits), computed exactly, against 4,000 draws."""
    lo, hi = 1, 50
    L = (lo + hi) // 2
    go = L / (1 + L)  # probability of one more symbol
    raw = np.array([go**n * (1 - go) for n in range(hi)] + [go**hi])  # length n = 0 … hi
    dist = np.zeros(hi + 2)
    for n, p in enumerate(raw):
        if n < lo:
            continue
        if n == 0:
            dist[0] += p
        else:
            dist[n] += p / 2  # even number of ones
            dist[n + 1] += p / 2  # odd: a 1 is appended
    dist[hi + 1] = 0.0  # does not fit: rejected
    dist /= dist.sum()
    mean, std = (dist * np.arange(hi + 2)).sum(), np.sqrt((dist * np.arange(hi + 2) ** 2).sum()
                                                           - (dist * np.arange(hi + 2)).sum() ** 2)
    rng = np.random.default_rng(0)
    draws = [s for s in (LANGUAGES["parity"].draw_published(lo, hi, rng) for _ in range(5000))
             if s is not None][:4000]
    assert abs(np.mean([len(s) for s in draws]) - mean) < 4 * std / np.sqrt(len(draws))
    assert all(s.count("1") % 2 == 0 for s in draws)


def test_dyck_pcfg_is_cut_like_the_public_generator():
    rng = np.random.default_rng(0)
    draws = [pcfg_dyck(rng, 20) for _ in range(3000)]
    assert all(dyck1(s) and len(s) <= 20 for s in draws)
    # S → ε at the root with probability 1 − p − q = 0.25 (plus cut and empty concatenations).
    assert 0.25 < draws.count("") / len(draws) < 0.45
    two = [pcfg_dyck(rng, 30, pairs=("()", "[]")) for _ in range(500)]
    nested = [s for s in two if "[" in s and "(" in s]
    assert nested and all(_dyck2(s) for s in two)  # public shuffle-2 data are Dyck-2 words
    resets = [LANGUAGES["reset-dyck"].draw_published(1, 50, rng) for _ in range(300)]
    assert all(s is None or s.count("1") == 1 for s in resets)


def _dyck2(s: str) -> bool:
    while "()" in s or "[]" in s:
        s = s.replace("()", "").replace("[]", "")
    return s == ""


def test_too_few_distinct_strings_is_a_user_error():
    from fwp.errors import UserError

    with pytest.raises(UserError, match="distinct new strings"):
        published_draws(LANGUAGES["parity"], Bin(1, 3), 50, np.random.default_rng(0),
                        unique=True)
    with pytest.raises(UserError, match="widen the bin"):
        published_data("abab-star", "1-3", ["1-3"], 10, 10, 10, seed=0)
