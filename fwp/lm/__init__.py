"""Language modelling with any layer list: ``fwp lm {train,eval,generate,sweep,report,export}``.

- ``data``: corpora (the built-in ``stdlib``, files, folders, WikiText-103, enwik8), their fixed
  splits, memory-mapped token caches; ``tokenizer``: bytes, characters, ``tokenizers`` models.
- ``model``: the decoder-only :class:`FwpLM` over a :class:`fwp.layers.LayerStack`.
- ``segments`` / ``train``: contiguous segments, truncated backpropagation, the run core's loop.
- ``evaluate``: bits per byte and perplexity with carried or reset state.
- ``generate``: sampling with the state as the cache; ``hf``: the ``transformers`` classes.
- ``sweep`` / ``report``: the equal-size study on the run core's sweep engine.
"""
