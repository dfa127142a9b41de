"""Independent membership tests for the benchmark languages.

Written without the generator's state machines: regular languages by regular expressions, the
bracket languages by repeatedly deleting matched pairs, the counter languages by block lengths.
"""

from __future__ import annotations

import re


def _reduce_pairs(s: str, pair: str) -> str:
    """Delete adjacent matched pairs until none is left: '' iff s is balanced."""
    while pair in s:
        s = s.replace(pair, "")
    return s


def dyck1(s: str) -> bool:
    return set(s) <= set("()") and _reduce_pairs(s, "()") == ""


def dyck1_prefix(s: str) -> bool:
    """A prefix of a balanced string: only unmatched openers remain after reduction."""
    return set(s) <= set("()") and set(_reduce_pairs(s, "()")) <= {"("}


def shuffle2(s: str) -> bool:
    if not set(s) <= set("()[]"):
        return False
    round_ = "".join(c for c in s if c in "()")
    square = "".join(c for c in s if c in "[]")
    return _reduce_pairs(round_, "()") == "" and _reduce_pairs(square, "[]") == ""


def reset_dyck(s: str) -> bool:
    if not set(s) <= set("()1") or not s:
        return False
    *heads, last = s.split("1")
    return all(dyck1_prefix(h) for h in heads) and dyck1(last)


def _blocks(s: str, letters: str) -> bool:
    match = re.fullmatch("".join(f"({c}+)" for c in letters), s)
    return match is not None and len({len(g) for g in match.groups()}) == 1


RECOGNISERS = {
    "parity": lambda s: re.fullmatch(r"0*(10*10*)*", s) is not None and s != "",
    "aa-star": lambda s: re.fullmatch(r"(aa)+", s) is not None,
    "abab-star": lambda s: re.fullmatch(r"(abab)+", s) is not None,
    "counter-2": lambda s: _blocks(s, "ab"),
    "counter-3": lambda s: _blocks(s, "abc"),
    "dyck-1": lambda s: s != "" and dyck1(s),
    "shuffle-2": lambda s: s != "" and shuffle2(s),
    "reset-dyck": reset_dyck,
}
