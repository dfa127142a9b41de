"""Code execution (Fan et al. 2020; Irie, Schlag, Csordás & Schmidhuber, NeurIPS 2021, App. B).

A program is a sequence of statements over ``variables`` variables (3 or 5 in the paper),
read one token at a time; after the ``;`` that ends a ``print`` the model must output the
printed value, everywhere else the no-output class ``_`` (as the public generator,
``IDSIA/recurrent-fwp``, ``algorithmic/utils/data_generator.py``). Statements, as there:

- assignment ``x = 7 ;`` (value 0–9; the first statement is always one),
- increment / decrement ``x ++ ;`` / ``x -- ;`` of a defined variable (turned into the other
  one where the value would leave [−8, 16]),
- ``print x ;`` of a defined variable (the last statement is always one),
- conditional ``if x < 4 : <statement>`` (``<`` or ``>``, constant 0–9) guarding one statement of
  the first three kinds, drawn from the variables defined before it.

Every statement kind is equally likely after the first. One difference from the public code,
whose targets do not follow Python there: a conditional assignment to a variable that is already
defined does change it when the condition holds (the public generator keeps the old value).
The tests run every generated program with Python and compare the printed values.
A bin counts statements; the paper uses 100.
"""

from __future__ import annotations

import numpy as np

from fwp.formal.tasks.base import TokenTask

VARIABLE_NAMES = "xyzabcdefg"
MAX_ASSIGN, MAX_CONDITION = 10, 10  # constants drawn in [0, 10)
LOW, HIGH = -8, 16  # an increment or decrement that would leave [LOW, HIGH] flips
NO_OUTPUT = "_"


class CodeExecution(TokenTask):
    bin_unit = "statements"
    min_size = 1

    def __init__(self, variables: int = 3) -> None:
        self.variables = variables
        self.name = f"code-exec-{variables}"
        self.description = f"programs over {variables} variables: print the printed values"
        self.names = list(VARIABLE_NAMES[:variables])
        self.alphabet = [*self.names, "=", "++", "--", ";", "print", "if", "<", ">", ":",
                         *map(str, range(10))]
        self.classes = [NO_OUTPUT, *map(str, range(LOW, HIGH + 1))]
        self.blank = NO_OUTPUT

    def example_size(self) -> int:
        return 6

    def size_of(self, example: str) -> int:
        return example.split().count(";")  # a conditional and its statement count as one

    def draw(self, size: int, rng: np.random.Generator) -> str:
        values: dict[str, int] = {}
        out: list[str] = []
        for count in range(size):
            kind = 0 if count == 0 else 2 if count == size - 1 else int(rng.integers(4))
            if kind < 3:
                out += self._statement(kind, values, rng, run=True)
                continue
            name = self._defined(values, rng)
            op, constant = "<>"[int(rng.integers(2))], int(rng.integers(MAX_CONDITION))
            holds = values[name] < constant if op == "<" else values[name] > constant
            out += ["if", name, op, str(constant), ":"]
            out += self._statement(int(rng.integers(3)), values, rng, run=holds)
        return " ".join(out)

    def _defined(self, values: dict[str, int], rng: np.random.Generator) -> str:
        names = list(values)
        return names[int(rng.integers(len(names)))]

    def _statement(self, kind: int, values: dict[str, int], rng: np.random.Generator,
                   run: bool) -> list[str]:
        """Tokens of an assignment (0), increment/decrement (1) or print (2); applied to
        ``values`` when ``run``."""
        if kind == 0:
            name, value = self.names[int(rng.integers(len(self.names)))], int(rng.integers(10))
            if run:
                values[name] = value
            return [name, "=", str(value), ";"]
        name = self._defined(values, rng)
        if kind == 2:
            return ["print", name, ";"]
        up = rng.integers(2) == 0
        if (up and values[name] + 1 > HIGH) or (not up and values[name] - 1 < LOW):
            up = not up
        if run:
            values[name] += 1 if up else -1
        return [name, "++" if up else "--", ";"]

    def answers(self, example: str) -> list[str | None]:
        """Replays the program: the printed value at each executed print's ``;``."""
        tokens = example.split()
        values: dict[str, int] = {}
        out: list[str | None] = []
        run, i = True, 0
        while i < len(tokens):
            if tokens[i] == "if":
                name, op, constant = tokens[i + 1], tokens[i + 2], int(tokens[i + 3])
                run = values[name] < constant if op == "<" else values[name] > constant
                out += [NO_OUTPUT] * 5
                i += 5
                continue
            end = tokens.index(";", i)
            statement = tokens[i:end]
            printed = NO_OUTPUT
            if run and statement[0] == "print":
                printed = str(values[statement[1]])
            elif run and statement[1] == "=":
                values[statement[0]] = int(statement[2])
            elif run:
                values[statement[0]] += 1 if statement[1] == "++" else -1
            out += [NO_OUTPUT] * len(statement) + [printed]
            run, i = True, end + 1
        return out
