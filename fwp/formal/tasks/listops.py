"""Sequential ListOps (Nangia & Bowman 2018, as Irie, Schlag, Csordás & Schmidhuber, NeurIPS 2021,
App. B use it): a nested list expression in prefix form, read one token at a time; after the
last token the model outputs its value (0–9).

Generator of the public code (``IDSIA/recurrent-fwp``, ``algorithmic/utils/nyu_listops.py``,
forked from the NYU ListOps generator): operators ``[MIN``, ``[MAX``, ``[FIRST``, each list
closed by ``]``, values 0–9; the root is an operator; below it a node is a value with
probability 0.75 and otherwise an operator with 2–5 arguments; nodes at depth 20 are values.
A bin counts the **depth**: the number of nested operator levels of the expression (the public
``--only_depth 11`` data is our depth 10, ``16`` our 15, the paper's two settings). Expressions of
a depth are drawn by rejection, as there.
"""

from __future__ import annotations

import numpy as np

from fwp.formal.tasks.base import TokenTask

OPERATORS = ("[MIN", "[MAX", "[FIRST")
VALUE_PROBABILITY = 0.75  # below the root: a value with this probability, else an operator
MAX_ARGUMENTS = 5
MAX_LEVEL = 20  # a node at this level (the root is level 1) is a value
CLOSE = "]"


def evaluate(tokens: list[str]) -> int:
    """The value of a prefix expression, with a stack."""
    stack: list[list] = []
    value = None
    for token in tokens:
        if token in OPERATORS:
            stack.append([token])
        elif token == CLOSE:
            op, *args = stack.pop()
            value = min(args) if op == "[MIN" else max(args) if op == "[MAX" else args[0]
            if stack:
                stack[-1].append(value)
        else:
            stack[-1].append(int(token))
    return value


def depth_of(tokens: list[str]) -> int:
    """Nested operator levels: the largest number of lists open at once."""
    depth = deepest = 0
    for token in tokens:
        depth += 1 if token in OPERATORS else -1 if token == CLOSE else 0
        deepest = max(deepest, depth)
    return deepest


class ListOps(TokenTask):
    name = "listops"
    description = "nested [MIN/[MAX/[FIRST lists of digits: output the value at the end"
    bin_unit = "depth"
    min_size, max_size = 1, MAX_LEVEL - 1
    alphabet = [*OPERATORS, CLOSE, *map(str, range(10))]
    classes = list(map(str, range(10)))

    def example_size(self) -> int:
        return 2

    def size_of(self, example: str) -> int:
        return depth_of(example.split())

    def _tree(self, level: int, rng: np.random.Generator) -> tuple[list[str], int]:
        """Tokens of a random subtree at ``level`` and its depth in operator levels."""
        if level > 1 and (level >= MAX_LEVEL or rng.random() < VALUE_PROBABILITY):
            return [str(int(rng.integers(10)))], 0
        tokens, deepest = [], 0
        for _ in range(int(rng.integers(2, MAX_ARGUMENTS + 1))):
            sub, depth = self._tree(level + 1, rng)
            tokens += sub
            deepest = max(deepest, depth)
        op = OPERATORS[int(rng.integers(len(OPERATORS)))]
        return [op, *tokens, CLOSE], deepest + 1

    def draw(self, size: int, rng: np.random.Generator) -> str:
        while True:
            tokens, depth = self._tree(1, rng)
            if depth == size:
                return " ".join(tokens)

    def answers(self, example: str) -> list[str | None]:
        tokens = example.split()
        return [None] * (len(tokens) - 1) + [str(evaluate(tokens))]
