"""Sequential few-shot learning: N-way K-shot episodes fed to a fast weight programmer.

Data and episodes live in ``fwp.data``; the commands (``fwp fewshot ...``) in ``fwp.fewshot.cli``.
"""
