"""The formal languages of the benchmark and their "valid next characters" targets.

Task (Bhattamishra et al. 2020; Irie, Csordás, Schmidhuber 2023): the model reads a string
x_1 … x_T of a language L one character at a time; after reading x_1 … x_t it predicts the set

    next(x_1 … x_t) = {c ∈ Σ : x_1 … x_t c is a prefix of some string of L}
                      ∪ {END if x_1 … x_t ∈ L},

as independent yes/no outputs, one per character of Σ plus one for END (multi-label). A string is
predicted correctly when every position's set is exactly right. END is an output class only: it is
never fed as input.

Each language is a small machine with a state that a prefix leads to: ``step`` reads a character
(``None`` when the prefix leaves the language's prefix set) and ``allowed`` gives the set above.
``sample`` draws a string of an exact length, uniformly among the strings of that length where the
language has more than one (parity, Dyck-1, shuffle-2) and with the stated distribution otherwise.

Bins: a bin ``lo-hi`` counts the string length, except for the counter languages aⁿbⁿ and aⁿbⁿcⁿ,
whose bins count n (Bhattamishra et al.'s ``data_generator.py``: train n ∈ [1, 50], the longer bin
n ∈ [51, 100]). ``bin_size`` gives the quantity a bin counts.

``draw_published`` is one draw of the public data generators of Bhattamishra et al. (2020), which
the fixed data sets of :mod:`fwp.formal.data` are built from: parity lengths from a geometric
stopping rule, Dyck-1 and shuffle-2 from a PCFG, reset-Dyck from two PCFG Dyck strings, counters
and (aa)*, (abab)* with a uniform n or length.
"""

from __future__ import annotations

from collections.abc import Hashable
from functools import cache
from math import comb

import numpy as np

from fwp.errors import UserError
from fwp.formal.tasks import TASKS, TokenTask, get_task

END = "$"
"""The end-of-string output class (predicted where the prefix read so far is in the language)."""

State = Hashable


class Language:
    """A formal language with per-prefix "valid next characters" sets.

    Subclasses set ``name``, ``alphabet`` (input characters; output classes are ``alphabet + END``),
    ``min_length``, ``description``, and implement ``initial``, ``step``, ``allowed``,
    ``length_ok`` and ``_sample``.
    """

    name: str = ""
    alphabet: str = ""
    exclusive = False  # several classes may be right at a position: binary cross-entropy
    min_length: int = 1
    description: str = ""
    length_rule: str = "any length"
    bin_unit: str = "length"  # what a bin lo-hi counts: "length", or "n" for the counters

    @property
    def classes(self) -> str:
        """Output classes in logit order: the alphabet, then END."""
        return self.alphabet + END

    def initial(self) -> State:
        raise NotImplementedError

    def step(self, state: State, char: str) -> State | None:
        """The state after reading ``char``; None when the prefix leaves the prefix set."""
        raise NotImplementedError

    def allowed(self, state: State) -> frozenset[str]:
        """Characters (and END) that may follow a prefix in ``state``."""
        raise NotImplementedError

    def length_ok(self, length: int) -> bool:
        """Whether the language has a string of this length."""
        raise NotImplementedError

    def _sample(self, length: int, rng: np.random.Generator) -> str:
        raise NotImplementedError

    # -- public API ------------------------------------------------------------------------

    def check_length(self, length: int) -> None:
        if length < self.min_length or not self.length_ok(length):
            raise UserError(
                f"{self.name} has no string of length {length} (it needs {self.length_rule}, "
                f"at least {self.min_length}); choose another length or bin"
            )

    def sample(self, length: int, rng: np.random.Generator) -> str:
        """A string of L of exactly ``length`` characters."""
        self.check_length(length)
        return self._sample(length, rng)

    def lengths_in(self, lo: int, hi: int) -> list[int]:
        """The lengths in [lo, hi] that the language has strings of."""
        return [n for n in range(max(lo, self.min_length), hi + 1) if self.length_ok(n)]

    def bin_size(self, string: str) -> int:
        """The quantity a bin counts: the length (n for the counter languages)."""
        return len(string)

    def bin_lengths(self, lo: int, hi: int) -> list[int]:
        """The string lengths of bin ``lo-hi`` (a UserError if there is none)."""
        lengths = self.lengths_in(lo, hi)
        if not lengths:
            raise UserError(
                f"{self.name} has no string with length in {lo}-{hi} (it needs "
                f"{self.length_rule}, at least {self.min_length}); widen the bin"
            )
        return lengths

    def sample_bin(self, lo: int, hi: int, count: int, rng: np.random.Generator) -> list[str]:
        """``count`` strings of bin ``lo-hi``, its lengths (n for counters) drawn uniformly."""
        picks = rng.choice(np.asarray(self.bin_lengths(lo, hi)), size=count)
        return [self._sample(int(n), rng) for n in picks]

    def all_strings(self, lo: int, hi: int) -> list[str] | None:
        """Every string of bin ``lo-hi`` where the language has one per length (None otherwise)."""
        return None

    def draw_published(self, lo: int, hi: int, rng: np.random.Generator) -> str | None:
        """One draw of the public generator for bin ``lo-hi``; None when it is rejected there."""
        raise NotImplementedError

    def next_sets(self, string: str) -> list[frozenset[str]]:
        """``next(x_1 … x_t)`` for t = 1 … len(string); ``string`` must be a prefix of L."""
        state = self.initial()
        sets = []
        for t, char in enumerate(string):
            state = self.step(state, char) if char in self.alphabet else None
            if state is None:
                raise UserError(
                    f"{string[: t + 1]!r} is not a prefix of any {self.name} string "
                    f"(alphabet {self.alphabet!r})"
                )
            sets.append(self.allowed(state))
        return sets

    def tokens(self, string: str) -> list[str]:
        """The input tokens of ``string``: its characters."""
        return list(string)

    def scored(self, string: str) -> np.ndarray:
        """``[T]`` bool: every position of a language string has a target."""
        return np.ones(len(string), dtype=bool)

    def example_size(self) -> int:
        """A length for ``fwp formal languages`` to show an example of."""
        return self.lengths_in(1, 8)[-1]

    def targets(self, string: str) -> np.ndarray:
        """Multi-hot targets ``[T, len(classes)]`` (float32) of :meth:`next_sets`."""
        index = {c: i for i, c in enumerate(self.classes)}
        out = np.zeros((len(string), len(self.classes)), dtype=np.float32)
        for t, allowed in enumerate(self.next_sets(string)):
            out[t, [index[c] for c in allowed]] = 1.0
        return out

    def accepts(self, string: str) -> bool:
        """Membership in L (via the same machine: tests use an independent recogniser)."""
        try:
            sets = self.next_sets(string)
        except UserError:
            return False
        return bool(sets) and END in sets[-1]


# -- counting helpers (exact integers) ----------------------------------------------------


def _comb(n: int, k: int) -> int:
    return comb(n, k) if 0 <= k <= n else 0


@cache
def _paths(steps: int, depth: int, closed: bool) -> int:
    """Number of ±1 walks of ``steps`` steps from ``depth`` that never go below 0.

    ``closed``: the walk must end at 0 (ballot numbers); otherwise it may end anywhere. Both by
    the reflection principle: walks that touch −1 are mirrored at their first touch. For open
    walks the per-end-point differences telescope to a sum of d + 1 binomials.
    """
    if closed:
        if depth > steps or (steps - depth) % 2:
            return 0
        up = (steps - depth) // 2
        return _comb(steps, up) - _comb(steps, up - 1)
    lo = (steps - depth + 1) // 2 if steps > depth else 0
    return sum(_comb(steps, u) for u in range(lo, min(steps, lo + depth) + 1))


def _randbelow(n: int, rng: np.random.Generator) -> int:
    """Uniform integer in [0, n), exact also for counts beyond 64 bits."""
    if n < 2**62:
        return int(rng.integers(n))
    nbits = n.bit_length()
    while True:  # rejection sampling: accepts with probability > 1/2
        r = int.from_bytes(rng.bytes((nbits + 7) // 8), "little") >> (-nbits % 8)
        if r < n:
            return r


def _walk(steps: int, rng: np.random.Generator, closed: bool, up: str, down: str) -> str:
    """A uniformly random non-negative walk (a Dyck word when ``closed``) as a string."""
    depth, chars = 0, []
    for left in range(steps, 0, -1):
        n_up = _paths(left - 1, depth + 1, closed)
        n_all = n_up + (_paths(left - 1, depth - 1, closed) if depth > 0 else 0)
        if _randbelow(n_all, rng) < n_up:
            chars.append(up)
            depth += 1
        else:
            chars.append(down)
            depth -= 1
    return "".join(chars)


def _pick_weighted(weights: list[int], rng: np.random.Generator) -> int:
    """Index i with probability weights[i] / sum(weights), exact for big integers."""
    r = _randbelow(sum(weights), rng)
    for i, w in enumerate(weights):
        if r < w:
            return i
        r -= w
    raise AssertionError("unreachable")


DYCK_P, DYCK_Q = 0.5, 0.25
"""The PCFG of the public Dyck generators: S → ( S ) with p, S S with q, ε with 1 − p − q."""


def pcfg_dyck(rng: np.random.Generator, max_size: int, pairs: tuple[str, ...] = ("()",),
              p: float = DYCK_P, q: float = DYCK_Q) -> str:
    """A string of the public generators' Dyck PCFG (Bhattamishra et al. 2020), as they cut it.

    A node reached with ``size`` characters of enclosing brackets (size ≥ ``max_size``) is ε;
    a node whose string grows beyond ``max_size`` becomes ε. The pair of a ``( S )`` node is
    uniform among ``pairs`` (two pairs give Dyck-2, the public shuffle-2 data). Written with an
    explicit stack: the S S rule keeps the size, so chains of it can be deep.
    """
    stack: list[tuple[str, int]] = [("node", 0)]
    values: list[str] = []
    while stack:
        op, size = stack.pop()
        if op == "node":
            if size >= max_size:
                values.append("")
                continue
            r = rng.random()
            if r < p:
                stack.append(("wrap", int(rng.integers(len(pairs)))))
                stack.append(("node", size + 2))
            elif r < p + q:
                stack += [("concat", 0), ("node", size), ("node", size)]
            else:
                values.append("")
        else:
            if op == "wrap":
                pair = pairs[size]
                out = pair[0] + values.pop() + pair[1]
            else:
                second = values.pop()
                out = values.pop() + second
            values.append(out if len(out) <= max_size else "")
    return values.pop()


# -- the languages -----------------------------------------------------------------------


class Parity(Language):
    """Binary strings with an even number of 1s. Any character may follow any prefix; END is
    valid exactly where the prefix has even parity, so the END output is the running parity."""

    name = "parity"
    alphabet = "01"
    min_length = 1
    description = "{0,1}* with an even number of 1s"

    def initial(self) -> State:
        return 0

    def step(self, state: State, char: str) -> State | None:
        return state ^ (char == "1")

    def allowed(self, state: State) -> frozenset[str]:
        return frozenset("01" + (END if state == 0 else ""))

    def length_ok(self, length: int) -> bool:
        return True

    def _sample(self, length: int, rng: np.random.Generator) -> str:
        # Free bits, then the last bit restores even parity: uniform over the strings of L_n.
        bits = rng.integers(0, 2, size=length - 1)
        last = int(bits.sum()) % 2
        return "".join(map(str, bits.tolist())) + str(last)

    def draw_published(self, lo: int, hi: int, rng: np.random.Generator) -> str | None:
        # Public generator: 0 and 1 each with p, stop with 1 − 2p, p = L / (2 (1 + L)) for
        # L = (lo + hi) // 2 (mean length L), cut at hi; an odd string gets a final 1 if it fits.
        L = (lo + hi) // 2
        stop = 1.0 - L / (1.0 + L)
        length = min(int(rng.geometric(stop)) - 1, hi)
        if length < lo:
            return None
        string = "".join(map(str, rng.integers(0, 2, size=length).tolist()))
        if string.count("1") % 2:
            string += "1"
        return string if len(string) <= hi else None


class AAStar(Language):
    """(aa)*: a unary string of even length. 'a' always follows; END at even positions (mod-2
    counting, Bhattamishra et al.'s "(aa)*")."""

    name = "aa-star"
    alphabet = "a"
    min_length = 2
    description = "(aa)*"
    length_rule = "an even length"

    def initial(self) -> State:
        return 0

    def step(self, state: State, char: str) -> State | None:
        return (state + 1) % 2

    def allowed(self, state: State) -> frozenset[str]:
        return frozenset("a" + (END if state == 0 else ""))

    def length_ok(self, length: int) -> bool:
        return length % 2 == 0

    def _sample(self, length: int, rng: np.random.Generator) -> str:
        return "a" * length

    def all_strings(self, lo: int, hi: int) -> list[str] | None:
        return ["a" * n for n in self.lengths_in(lo, hi)]

    def draw_published(self, lo: int, hi: int, rng: np.random.Generator) -> str | None:
        # Public generator: (lo + uniform{0..hi − lo}) // 2 copies of "aa", kept if in the bin.
        string = "aa" * ((lo + int(rng.integers(hi - lo + 1))) // 2)
        return string if lo <= len(string) <= hi else None


class ABABStar(Language):
    """(abab)*: the next character is fixed (a after b, b after a); END at multiples of 4."""

    name = "abab-star"
    alphabet = "ab"
    min_length = 4
    description = "(abab)*"
    length_rule = "a multiple of 4"

    def initial(self) -> State:
        return 0

    def step(self, state: State, char: str) -> State | None:
        return (state + 1) % 4 if char == "ab"[state % 2] else None

    def allowed(self, state: State) -> frozenset[str]:
        return frozenset("ab"[state % 2] + (END if state == 0 else ""))

    def length_ok(self, length: int) -> bool:
        return length % 4 == 0

    def _sample(self, length: int, rng: np.random.Generator) -> str:
        return "ab" * (length // 2)

    def all_strings(self, lo: int, hi: int) -> list[str] | None:
        return ["ab" * (n // 2) for n in self.lengths_in(lo, hi)]

    def draw_published(self, lo: int, hi: int, rng: np.random.Generator) -> str | None:
        # Public generator: (lo + uniform{0..hi − lo}) // 4 copies of "abab", kept if in the bin.
        string = "abab" * ((lo + int(rng.integers(hi - lo + 1))) // 4)
        return string if lo <= len(string) <= hi else None


class Counter(Language):
    """aⁿbⁿ (k = 2) or aⁿbⁿcⁿ (k = 3), n ≥ 1. After aᵐ both 'a' and 'b' may follow; after
    that each block must match the count of a's; END once the last block is complete."""

    bin_unit = "n"

    def __init__(self, k: int) -> None:
        self.k = k
        self.alphabet = "abc"[:k]
        self.name = f"counter-{k}"
        self.min_length = k
        self.description = "".join(f"{c}ⁿ" for c in self.alphabet) + ", n ≥ 1"
        self.length_rule = "an even length" if k == 2 else f"a multiple of {k}"

    def initial(self) -> State:
        return (0, 0, 0)  # (n = number of a's, current block, characters read in that block)

    def step(self, state: State, char: str) -> State | None:
        n, block, count = state
        if block == 0:
            if char == "a":
                return (n + 1, 0, n + 1)
            return (n, 1, 1) if char == "b" and n > 0 else None
        if count < n:
            return (n, block, count + 1) if char == self.alphabet[block] else None
        if block + 1 < self.k and char == self.alphabet[block + 1]:
            return (n, block + 1, 1)
        return None

    def allowed(self, state: State) -> frozenset[str]:
        n, block, count = state
        if block == 0:
            return frozenset("ab") if n > 0 else frozenset("a")
        if count < n:
            return frozenset(self.alphabet[block])
        return frozenset(self.alphabet[block + 1] if block + 1 < self.k else END)

    def length_ok(self, length: int) -> bool:
        return length % self.k == 0

    def _sample(self, length: int, rng: np.random.Generator) -> str:
        n = length // self.k
        return "".join(c * n for c in self.alphabet)

    def bin_size(self, string: str) -> int:
        return len(string) // self.k

    def bin_lengths(self, lo: int, hi: int) -> list[int]:
        """Bins count n: the lengths k·n for n in [lo, hi]."""
        return [self.k * n for n in range(max(lo, 1), hi + 1)]

    def all_strings(self, lo: int, hi: int) -> list[str] | None:
        return ["".join(c * n for c in self.alphabet) for n in range(max(lo, 1), hi + 1)]

    def draw_published(self, lo: int, hi: int, rng: np.random.Generator) -> str | None:
        # Public generator: n uniform in [lo, hi].
        return self._sample(self.k * int(rng.integers(lo, hi + 1)), rng)


class Dyck1(Language):
    """Balanced strings of '(' and ')'. '(' always; ')' at depth > 0; END at depth 0."""

    name = "dyck-1"
    alphabet = "()"
    min_length = 2
    description = "Dyck-1: balanced ( )"
    length_rule = "an even length"

    def initial(self) -> State:
        return 0

    def step(self, state: State, char: str) -> State | None:
        depth = state + (1 if char == "(" else -1)
        return depth if depth >= 0 else None

    def allowed(self, state: State) -> frozenset[str]:
        return frozenset("(" + (")" if state > 0 else END))

    def length_ok(self, length: int) -> bool:
        return length % 2 == 0

    def _sample(self, length: int, rng: np.random.Generator) -> str:
        return _walk(length, rng, closed=True, up="(", down=")")

    def draw_published(self, lo: int, hi: int, rng: np.random.Generator) -> str | None:
        string = pcfg_dyck(rng, hi)
        return string if len(string) >= lo else None


class Shuffle2(Language):
    """Shuffle-2: interleavings of a Dyck-1 word over ( ) and one over [ ]. Both openers always;
    a closer where its own depth is > 0; END when both depths are 0."""

    name = "shuffle-2"
    alphabet = "()[]"
    min_length = 2
    description = "shuffle of Dyck-1 over ( ) and Dyck-1 over [ ]"
    length_rule = "an even length"

    def initial(self) -> State:
        return (0, 0)

    def step(self, state: State, char: str) -> State | None:
        i = 0 if char in "()" else 1
        depth = list(state)
        depth[i] += 1 if char in "([" else -1
        return tuple(depth) if depth[i] >= 0 else None

    def allowed(self, state: State) -> frozenset[str]:
        round_, square = state
        out = "([" + (")" if round_ > 0 else "") + ("]" if square > 0 else "")
        return frozenset(out + (END if round_ == square == 0 else ""))

    def length_ok(self, length: int) -> bool:
        return length % 2 == 0

    def _sample(self, length: int, rng: np.random.Generator) -> str:
        # Uniform over L_n: the number r of round brackets has weight C(n, r)·#Dyck(r)·#Dyck(n−r);
        # then two uniform Dyck words and a uniform choice of the positions of the round ones.
        weights = [
            comb(length, r) * _paths(r, 0, True) * _paths(length - r, 0, True)
            for r in range(0, length + 1, 2)
        ]
        r = 2 * _pick_weighted(weights, rng)
        round_ = iter(_walk(r, rng, closed=True, up="(", down=")"))
        square = iter(_walk(length - r, rng, closed=True, up="[", down="]"))
        is_round = np.zeros(length, dtype=bool)
        is_round[rng.choice(length, size=r, replace=False)] = True
        return "".join(next(round_) if flag else next(square) for flag in is_round)

    def draw_published(self, lo: int, hi: int, rng: np.random.Generator) -> str | None:
        # The public shuffle generator runs the Dyck PCFG with the pair drawn per node: its
        # strings are Dyck-2 words (a subset of shuffle-2), with shuffle-2's targets.
        string = pcfg_dyck(rng, hi, pairs=("()", "[]"))
        return string if len(string) >= lo else None


class ResetDyck(Language):
    """Reset-Dyck-1: segments s_0 1 s_1 1 … 1 s_k over ( ) separated by the reset symbol '1';
    every segment is a Dyck-1 prefix (never below depth 0) and the last one is balanced. '(' and
    '1' always; ')' where the current segment's depth is > 0; END where it is 0."""

    name = "reset-dyck"
    alphabet = "()1"
    min_length = 1
    description = "Reset-Dyck-1: '1' resets the Dyck-1 counter"
    max_resets = 3

    def initial(self) -> State:
        return 0

    def step(self, state: State, char: str) -> State | None:
        if char == "1":
            return 0
        depth = state + (1 if char == "(" else -1)
        return depth if depth >= 0 else None

    def allowed(self, state: State) -> frozenset[str]:
        return frozenset("(1" + (")" if state > 0 else END))

    def length_ok(self, length: int) -> bool:
        return True

    def _sample(self, length: int, rng: np.random.Generator) -> str:
        # 1 to 3 resets (fewer for very short strings); a balanced last segment of uniform even
        # length; the rest split at uniform cut points among the leading segments, each a
        # uniform Dyck-1 prefix (a non-negative walk that may end above 0).
        resets = int(rng.integers(1, min(self.max_resets, length) + 1))
        rest = length - resets
        last = 2 * int(rng.integers(0, rest // 2 + 1))
        cuts = np.sort(rng.integers(0, rest - last + 1, size=resets - 1))
        sizes = np.diff(np.concatenate([[0], cuts, [rest - last]])).tolist()
        parts = [_walk(n, rng, closed=False, up="(", down=")") for n in sizes]
        parts.append(_walk(last, rng, closed=True, up="(", down=")"))
        return "1".join(parts)

    def draw_published(self, lo: int, hi: int, rng: np.random.Generator) -> str | None:
        # Public generator: a prefix (cut uniformly) of one PCFG Dyck string, the reset symbol,
        # then a second PCFG Dyck string, each cut at hi. It only asks length ≥ lo; we also
        # keep length ≤ hi so that bins do not overlap (our choice).
        first, second = pcfg_dyck(rng, hi), pcfg_dyck(rng, hi)
        string = first[: int(rng.integers(len(first) + 1))] + "1" + second
        return string if lo <= len(string) <= hi else None


LANGUAGES: dict[str, Language] = {
    lang.name: lang
    for lang in [
        Parity(),
        AAStar(),
        ABABStar(),
        Counter(2),
        Counter(3),
        Shuffle2(),
        Dyck1(),
        ResetDyck(),
    ]
}

SEQUENCE_TASKS: dict[str, Language | TokenTask] = LANGUAGES | TASKS
"""Everything ``--language`` accepts: the languages, then the algorithmic tasks of
:mod:`fwp.formal.tasks` (trained, tested and swept the same way)."""

ALIASES = {"aa*": "aa-star", "(aa)*": "aa-star", "abab*": "abab-star", "(abab)*": "abab-star",
           "reset-dyck-1": "reset-dyck", "dyck1": "dyck-1", "anbn": "counter-2",
           "anbncn": "counter-3"}


def get_language(name: str) -> Language | TokenTask:
    """The language or task called ``name`` (names of :data:`LANGUAGES`, a few common aliases,
    or a task with options, ``recall:keys=64``)."""
    key = ALIASES.get(name.lower(), name.lower())
    found = SEQUENCE_TASKS.get(key) or get_task(name)
    if found is None:
        raise UserError(
            f"unknown language or task {name!r}; choose one of {', '.join(SEQUENCE_TASKS)} (tasks "
            f"also take options, e.g. code-exec:variables=4 or recall:keys=64,values=8)"
        )
    return found
