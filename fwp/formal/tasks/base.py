"""Sequence tasks with whole-word tokens and one answer class per scored position.

A :class:`TokenTask` plugs into the formal-language workflow (same registry, data sets, model,
training, sweep and report) beside the languages of :mod:`fwp.formal.languages`. Its examples
are strings of space-separated tokens (``"x = 3 ; print x ;"``), so that the fixed data sets stay
readable JSON; ``answers`` gives, per token, the class the model must output there, or ``None``
where nothing is scored. Unlike a language's sets of valid next characters, the classes of one
position exclude each other: the loss is the cross-entropy and a position is right when its
arg-max is the answer; a sequence is right when every scored position is.

A bin ``lo-hi`` counts the task's own size (``bin_unit``: statements of a program, operator depth
of an expression, key–value pairs), drawn uniformly in the bin unless the task says otherwise.
"""

from __future__ import annotations

import numpy as np

from fwp.errors import UserError


class TokenTask:
    """Base class: subclasses set ``name``, ``description``, ``alphabet`` (input tokens),
    ``classes`` (answer classes), ``bin_unit``, ``min_size``/``max_size`` and implement
    ``draw`` and ``answers``."""

    name: str = ""
    description: str = ""
    bin_unit: str = "length"
    min_size: int = 1
    max_size: int | None = None
    exclusive = True  # one class per scored position: cross-entropy and arg-max
    # The no-output class, if the task has one: its positions count in the sequence and position
    # accuracies, and the answer accuracy leaves them out (code execution: the printed values).
    blank: str | None = None
    alphabet: list[str]
    classes: list[str]

    # -- what a subclass provides ----------------------------------------------------------

    def draw(self, size: int, rng: np.random.Generator) -> str:
        """One example of exactly ``size`` (in ``bin_unit``)."""
        raise NotImplementedError

    def answers(self, example: str) -> list[str | None]:
        """Per token of ``example``: its answer class, or None where nothing is scored."""
        raise NotImplementedError

    def size_of(self, example: str) -> int:
        """The size (``bin_unit``) of an example."""
        raise NotImplementedError

    # -- the interface the formal workflow reads -------------------------------------------

    def tokens(self, example: str) -> list[str]:
        return example.split()

    def targets(self, example: str) -> np.ndarray:
        """One-hot ``[T, len(classes)]`` (float32) at scored positions, zero rows elsewhere."""
        index = {c: i for i, c in enumerate(self.classes)}
        answers = self.answers(example)
        out = np.zeros((len(answers), len(self.classes)), dtype=np.float32)
        for t, answer in enumerate(answers):
            if answer is not None:
                out[t, index[answer]] = 1.0
        return out

    def scored(self, example: str) -> np.ndarray:
        """``[T]`` bool: the positions with an answer."""
        return np.array([a is not None for a in self.answers(example)], dtype=bool)

    def bin_size(self, example: str) -> int:
        return self.size_of(example)

    def lengths_in(self, lo: int, hi: int) -> list[int]:
        top = hi if self.max_size is None else min(hi, self.max_size)
        return list(range(max(lo, self.min_size), top + 1))

    def bin_lengths(self, lo: int, hi: int) -> list[int]:
        sizes = self.lengths_in(lo, hi)
        if not sizes:
            limit = "" if self.max_size is None else f" and at most {self.max_size}"
            raise UserError(f"{self.name} has no example with {self.bin_unit} in {lo}-{hi} (it "
                            f"needs at least {self.min_size}{limit}); choose another bin")
        return sizes

    def all_strings(self, lo: int, hi: int) -> list[str] | None:
        return None  # many examples per size: data sets are deduplicated draws

    def draw_published(self, lo: int, hi: int, rng: np.random.Generator) -> str:
        return self.draw(int(rng.choice(np.asarray(self.bin_lengths(lo, hi)))), rng)

    def sample_bin(self, lo: int, hi: int, count: int, rng: np.random.Generator) -> list[str]:
        return [self.draw_published(lo, hi, rng) for _ in range(count)]

    def sample(self, size: int, rng: np.random.Generator) -> str:
        self.bin_lengths(size, size)
        return self.draw(size, rng)

    def example_size(self) -> int:
        """A small size for ``fwp formal languages`` to show an example of."""
        return self.min_size


def parse_options(name: str, text: str, allowed: dict[str, tuple[int, int]]) -> dict[str, int]:
    """``KEY=VALUE,…`` of integer task options, each in its [lo, hi]; one clear error if not."""
    options = {}
    if text and not allowed:
        raise UserError(f"task {name!r} takes no options (got {text!r}); its sizes are chosen with "
                        f"--train-bin and --bins, e.g. --language {name} --train-bin 10")
    for item in filter(None, text.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in allowed:
            raise UserError(f"bad option {item!r} for task {name!r}: write {name}:KEY=VALUE,… "
                            f"with KEY one of {', '.join(allowed)}")
        lo, hi = allowed[key]
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or not lo <= number <= hi:
            raise UserError(f"bad option {item!r} for task {name!r}: {key} must be a whole "
                            f"number in [{lo}, {hi}]")
        options[key] = number
    return options
