"""fwp: fast weight programmers in PyTorch.

Layout: ``fwp.ops`` (pure tensor operators, one folder per update rule, each with a slow
reference beside its fast forms), ``fwp.layers`` (``nn.Module`` layers that own parameters),
and one package per workflow (``fwp.data``, ``fwp.fewshot``, ``fwp.formal``).
"""

__version__ = "0.1.0"
