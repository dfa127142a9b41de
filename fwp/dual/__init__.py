"""The dual form of fast weight programmers: each output as an initial-state term plus one
contribution per past write (unnormalised attention over the writes).

- :mod:`fwp.dual.decompositions`: the sum rule, the delta rule and the SRWM.
"""

from fwp.dual.decompositions import (
    Decomposition,
    delta_rule_contributions,
    srwm_contributions,
    sum_rule_contributions,
    write_attributions,
)

__all__ = [
    "Decomposition",
    "delta_rule_contributions",
    "srwm_contributions",
    "sum_rule_contributions",
    "write_attributions",
]
