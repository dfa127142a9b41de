"""The dual form of fast weight programmers: each output as an initial-state term plus one
contribution per past write (unnormalised attention over the writes).

- :mod:`fwp.dual.decompositions`: the sum rule, the delta rule and the SRWM.
- :mod:`fwp.dual.linear_layer`: a linear layer trained by SGD as attention over its training
  patterns.
"""

from fwp.dual.decompositions import (
    Decomposition,
    delta_rule_contributions,
    srwm_contributions,
    sum_rule_contributions,
    write_attributions,
)
from fwp.dual.linear_layer import (
    LayerDual,
    RecordedLinear,
    TrainingRecord,
    dual_output,
    train_recording,
)

__all__ = [
    "Decomposition",
    "LayerDual",
    "RecordedLinear",
    "TrainingRecord",
    "delta_rule_contributions",
    "dual_output",
    "srwm_contributions",
    "sum_rule_contributions",
    "train_recording",
    "write_attributions",
]
