"""Associative recall: N key–value pairs, then queries of keys seen (Schlag, Irie & Schmidhuber,
ICML 2021, §6.1; the multi-query form of Arora et al. 2023).

An example is ``k_1 v_1 k_2 v_2 … k_N v_N ? q_1 … q_m``: N distinct keys drawn from ``keys``
key tokens, each with a value drawn from ``values`` value tokens, the separator ``?``, then m
queries, distinct keys of the example; at each query the model outputs its value. ``queries=1``
(the task ``recall``) asks one key, as the capacity experiment of Schlag et al.; ``queries=0``
(the task ``mqar``) asks every key once, in a random order. A bin counts the pairs N; the
capacity question is how accuracy falls as N grows past the key dimension of a layer.
"""

from __future__ import annotations

import numpy as np

from fwp.errors import UserError
from fwp.formal.tasks.base import TokenTask

SEPARATOR = "?"


class Recall(TokenTask):
    bin_unit = "pairs"
    min_size = 1

    def __init__(self, keys: int = 256, values: int = 16, queries: int = 1) -> None:
        if queries > keys:
            raise UserError(f"recall: queries ({queries}) cannot exceed keys ({keys})")
        self.keys, self.values, self.queries = keys, values, queries
        self.max_size = keys  # distinct keys per example
        base = "mqar" if queries == 0 else "recall"
        defaults = {"keys": 256, "values": 16, "queries": 1 if base == "recall" else 0}
        given = {"keys": keys, "values": values, "queries": queries}
        options = ",".join(f"{k}={v}" for k, v in given.items() if defaults[k] != v)
        self.name = base + (f":{options}" if options else "")
        self.description = (f"N of {keys} keys with values of {values}, then "
                            f"{'every key' if queries == 0 else f'{queries} key(s)'}: "
                            f"output each value")
        self.alphabet = [*(f"k{i}" for i in range(keys)), *(f"v{i}" for i in range(values)),
                         SEPARATOR]
        self.classes = [f"v{i}" for i in range(values)]

    def example_size(self) -> int:
        return 3

    def size_of(self, example: str) -> int:
        return example.split().index(SEPARATOR) // 2

    def bin_lengths(self, lo: int, hi: int) -> list[int]:
        sizes = super().bin_lengths(lo, hi)
        if self.queries > sizes[0]:
            raise UserError(f"{self.name} asks {self.queries} queries, more than the "
                            f"{sizes[0]} pairs of bin {lo}-{hi}; lower queries or raise the bin")
        return sizes

    def draw(self, size: int, rng: np.random.Generator) -> str:
        keys = rng.choice(self.keys, size=size, replace=False)
        values = rng.integers(self.values, size=size)
        asked = rng.permutation(size)[: self.queries or size]
        pairs = [f"k{k} v{v}" for k, v in zip(keys, values)]
        return " ".join([*pairs, SEPARATOR, *(f"k{keys[i]}" for i in asked)])

    def answers(self, example: str) -> list[str | None]:
        tokens = example.split()
        end = tokens.index(SEPARATOR)
        memory = dict(zip(tokens[0:end:2], tokens[1:end:2]))
        return [None] * (end + 1) + [memory[k] for k in tokens[end + 1:]]
