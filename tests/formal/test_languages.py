import itertools
from collections import Counter

import numpy as np
import pytest

from fwp.errors import UserError
from fwp.formal.data import Bin, sample_test_set
from fwp.formal.languages import END, LANGUAGES, get_language
from tests.formal.recognisers import RECOGNISERS

# Brute force: all strings up to length N; a prefix of length <= M has all its continuations
# (and their shortest completions) inside that range, so its next-set is exact.
BRUTE = {
    "parity": (10, 8),
    "aa-star": (10, 8),
    "abab-star": (12, 8),
    "counter-2": (12, 5),
    "counter-3": (12, 3),
    "dyck-1": (14, 6),
    "shuffle-2": (8, 3),
    "reset-dyck": (10, 4),
}


def test_every_language_has_a_recogniser_and_brute_force_sizes():
    assert set(LANGUAGES) == set(RECOGNISERS) == set(BRUTE)


@pytest.mark.parametrize("name", sorted(LANGUAGES))
def test_next_sets_equal_brute_force(name):
    lang, accepts = LANGUAGES[name], RECOGNISERS[name]
    n_max, m_max = BRUTE[name]
    members = [
        "".join(chars)
        for n in range(1, n_max + 1)
        for chars in itertools.product(lang.alphabet, repeat=n)
        if accepts("".join(chars))
    ]
    prefixes = {s[:i] for s in members for i in range(1, len(s) + 1)}
    members = set(members)
    checked = 0
    for m in range(1, m_max + 1):
        for chars in itertools.product(lang.alphabet, repeat=m):
            p = "".join(chars)
            if p not in prefixes:
                with pytest.raises(UserError, match="not a prefix"):
                    lang.next_sets(p)
                continue
            expected = {c for c in lang.alphabet if p + c in prefixes}
            expected |= {END} if p in members else set()
            assert lang.next_sets(p)[-1] == expected, p
            assert lang.accepts(p) == (p in members)
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("name", sorted(LANGUAGES))
@pytest.mark.parametrize("bin_", ["1-50", "51-100", "101-130"])
def test_samples_are_members_with_consistent_targets(name, bin_):
    lang, accepts = LANGUAGES[name], RECOGNISERS[name]
    b = Bin.parse(bin_)
    strings = lang.sample_bin(b.lo, b.hi, 300, np.random.default_rng(0))
    for s in strings:
        assert b.lo <= lang.bin_size(s) <= b.hi
        assert accepts(s), s
        targets = lang.targets(s)
        assert targets.shape == (len(s), len(lang.alphabet) + 1)
        # The character actually read next is always a valid next character; the end is valid
        # after the whole string.
        index = {c: i for i, c in enumerate(lang.classes)}
        for t in range(len(s) - 1):
            assert targets[t, index[s[t + 1]]] == 1.0
        assert targets[-1, -1] == 1.0


@pytest.mark.parametrize("name", sorted(LANGUAGES))
def test_lengths_cover_the_bin_uniformly(name):
    lang = LANGUAGES[name]
    strings = lang.sample_bin(1, 50, 4000, np.random.default_rng(1))
    counts = Counter(lang.bin_size(s) for s in strings)
    # The valid lengths, by the independent recogniser's verdict on one sample per length
    # (n = 1..50 for the counter languages, whose bins count n).
    rng = np.random.default_rng(0)
    if lang.bin_unit == "n":
        valid = list(range(1, 51))
        assert all(_has_length(lang, lang.k * n, rng) for n in valid)
    else:
        valid = [n for n in range(1, 51) if _has_length(lang, n, rng)]
    assert set(counts) == set(valid)
    expected = len(strings) / len(valid)
    assert all(0.6 * expected < c < 1.4 * expected for c in counts.values()), counts


def _has_length(lang, n, rng):
    try:
        s = lang.sample(n, rng)
    except UserError:
        return False
    return len(s) == n and RECOGNISERS[lang.name](s)


@pytest.mark.parametrize("name,length", [("parity", 4), ("dyck-1", 8), ("shuffle-2", 4)])
def test_strings_of_one_length_are_uniform(name, length):
    lang, accepts = LANGUAGES[name], RECOGNISERS[name]
    support = {"".join(c) for c in itertools.product(lang.alphabet, repeat=length)
               if accepts("".join(c))}
    rng = np.random.default_rng(2)
    draws = Counter(lang.sample(length, rng) for _ in range(300 * len(support)))
    assert set(draws) == support
    assert min(draws.values()) > 200 and max(draws.values()) < 400, draws


def test_long_strings_are_sampled_exactly():
    # Counts beyond 64 bits (Catalan(150) ~ 1e86) must not break the exact sampler.
    rng = np.random.default_rng(3)
    assert RECOGNISERS["dyck-1"](LANGUAGES["dyck-1"].sample(300, rng))
    assert RECOGNISERS["shuffle-2"](LANGUAGES["shuffle-2"].sample(300, rng))
    assert RECOGNISERS["reset-dyck"](LANGUAGES["reset-dyck"].sample(301, rng))


@pytest.mark.parametrize("name,length", [
    ("counter-2", 51), ("counter-3", 52), ("aa-star", 7), ("abab-star", 10), ("dyck-1", 3),
    ("shuffle-2", 5), ("parity", 0), ("counter-2", 0),
])
def test_impossible_length_is_a_user_error(name, length):
    with pytest.raises(UserError, match=f"no string of length {length}"):
        LANGUAGES[name].sample(length, np.random.default_rng(0))


def test_bin_without_valid_length_is_a_user_error():
    with pytest.raises(UserError, match="widen the bin"):
        LANGUAGES["abab-star"].sample_bin(51, 51, 10, np.random.default_rng(0))


def test_unknown_language_and_aliases():
    assert get_language("aa*").name == "aa-star"
    assert get_language("(abab)*").name == "abab-star"
    with pytest.raises(UserError, match="choose one of"):
        get_language("dyck-7")


def test_test_sets_are_fixed_by_seed():
    lang = LANGUAGES["dyck-1"]
    a = sample_test_set(lang, Bin(51, 100), 50, seed=7)
    assert a == sample_test_set(lang, Bin(51, 100), 50, seed=7)
    assert a != sample_test_set(lang, Bin(51, 100), 50, seed=8)
    # Different bins and languages get independent streams, not shifted copies.
    assert sample_test_set(LANGUAGES["parity"], Bin(1, 50), 5, 7) != sample_test_set(
        LANGUAGES["parity"], Bin(1, 51), 5, 7)


def test_sampling_is_deterministic_given_the_generator():
    for lang in LANGUAGES.values():
        a = lang.sample_bin(1, 60, 20, np.random.default_rng(5))
        assert a == lang.sample_bin(1, 60, 20, np.random.default_rng(5))
