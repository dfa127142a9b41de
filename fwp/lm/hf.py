"""Hugging Face ``transformers`` classes for fwp language models (the ``fwp[hf]`` extra).

Importing this module registers :class:`FwpConfig` (``model_type = "fwp"``) and
:class:`FwpForCausalLM` with ``AutoConfig`` and ``AutoModelForCausalLM``::

    import fwp.lm.hf  # registers the classes
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained("my-fwp-model")   # a save_pretrained folder
    out = model.generate(input_ids, max_new_tokens=50, do_sample=True, top_p=0.9)

The model is :class:`fwp.lm.model.FwpLM`; its cache is the layers' state (:class:`FwpCache`):
fast weight matrices of a fixed size per FWP layer, the key/value cache of a softmax layer.
``generate()`` reads the prompt in one call and then feeds one token per call with that state,
so an FWP model generates in constant time and memory per token. The fwp tokenizer a run was
trained with travels in the config (``fwp_tokenizer``); :func:`from_run` turns a run folder of
``fwp lm train`` into a model. Nothing is downloaded: ``from_pretrained`` reads local folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

from fwp.errors import UserError
from fwp.layers import map_state, repeat_state
from fwp.lm.model import FwpLM, LMSpec
from fwp.lm.tokenizer import describe, tokenizer_from_dict


class FwpConfig(PretrainedConfig):
    """The shape of an :class:`FwpLM` (see :class:`fwp.lm.model.LMSpec`) and, optionally, the fwp
    tokenizer it reads (``fwp_tokenizer``: :meth:`fwp.lm.tokenizer.Tokenizer.to_dict`)."""

    model_type = "fwp"

    def __init__(
        self,
        vocab_size: int = 256,
        layers: list[str] | None = None,
        d_model: int = 128,
        n_heads: int = 4,
        d_ff: int = 512,
        dropout: float = 0.0,
        layer_options: dict[str, dict[str, Any]] | None = None,
        tie_word_embeddings: bool = True,
        fwp_tokenizer: dict | None = None,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.layers = list(layers or ["deltanet", "deltanet"])
        self.d_model, self.n_heads, self.d_ff, self.dropout = d_model, n_heads, d_ff, dropout
        self.layer_options = layer_options or {}
        self.fwp_tokenizer = fwp_tokenizer
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    def spec(self) -> LMSpec:
        return LMSpec(self.vocab_size, list(self.layers), self.d_model, self.n_heads, self.d_ff,
                      self.dropout, dict(self.layer_options), self.tie_word_embeddings)

    def check_vocabulary(self) -> None:
        if self.fwp_tokenizer is None:
            return
        tokenizer = tokenizer_from_dict(self.fwp_tokenizer)
        if tokenizer.vocab_size != self.vocab_size:
            raise UserError(
                f"vocabulary mismatch: the config says vocab_size={self.vocab_size}, its "
                f"tokenizer has {describe(tokenizer)}; do not override vocab_size when loading "
                f"a trained model")


class FwpCache(Cache):
    """The layers' state after the text read so far (one entry per block), as a ``Cache``.

    It holds no attention-layer objects of ``transformers``: every layer keeps its own state,
    which ``transformers`` sees as linear-attention-like (nothing to slice or mask).
    """

    def __init__(self, state: list[Any] | None = None, seen: int = 0) -> None:
        super().__init__(layers=[])
        self.state, self.seen = state, seen

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    def reset(self) -> None:
        self.state, self.seen = None, 0

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.state = map_state(lambda t: t.index_select(0, beam_idx.to(t.device)), self.state)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.state = map_state(lambda t: t[indices], self.state)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.state = repeat_state(self.state, repeats)


class FwpForCausalLM(PreTrainedModel, GenerationMixin):
    """An :class:`FwpLM` as a ``transformers`` causal language model."""

    config_class = FwpConfig
    base_model_prefix = "lm"
    main_input_name = "input_ids"
    _is_stateful = True  # no assisted generation: a state cannot step back
    _tied_weights_keys = {"lm.head.weight": "lm.embed.weight"}

    def __init__(self, config: FwpConfig) -> None:
        super().__init__(config)
        config.check_vocabulary()
        self.lm = FwpLM(config.spec())
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Nothing: every fwp layer initialises itself as its paper does when built."""

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the cache is FwpCache, made by forward

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.lm.embed

    def set_input_embeddings(self, value: torch.nn.Embedding) -> None:
        self.lm.embed = value

    def get_output_embeddings(self) -> torch.nn.Linear:
        return self.lm.head

    def forward(
        self,
        input_ids: torch.LongTensor,
        cache: FwpCache | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Logits of ``input_ids [B, T]`` after the text in ``cache``; ``labels`` (shifted inside,
        −100 ignored) give the mean cross-entropy. A padded batch is refused: the state of a
        row would read its padding."""
        if attention_mask is not None and not bool(attention_mask.all()):
            raise UserError("fwp models read every token into their state, so padding cannot be "
                            "masked: generate rows of equal length (or one row at a time)")
        if cache is not None and not isinstance(cache, FwpCache):
            raise UserError(f"an fwp model's cache is an FwpCache, not {type(cache).__name__}")
        logits, state = self.lm(input_ids, None if cache is None else cache.state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(),
                                   labels[:, 1:].flatten(), ignore_index=-100)
        if use_cache is False:
            cache = None
        else:
            cache = cache if cache is not None else FwpCache()
            cache.state, cache.seen = state, cache.seen + input_ids.shape[1]
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache)


def from_run(run: str | Path) -> FwpForCausalLM:
    """The best model of an ``fwp lm train`` run folder, with its tokenizer in the config."""
    from fwp.lm.train import load_run

    config, model, tokenizer = load_run(Path(run))
    spec = model.spec
    hf_config = FwpConfig(spec.vocab_size, spec.layers, spec.d_model, spec.n_heads, spec.d_ff,
                          spec.dropout, spec.layer_options, spec.tie_embeddings, tokenizer)
    hf_model = FwpForCausalLM(hf_config)
    hf_model.lm.load_state_dict(model.state_dict())
    return hf_model.eval()


AutoConfig.register("fwp", FwpConfig, exist_ok=True)
AutoModelForCausalLM.register(FwpConfig, FwpForCausalLM, exist_ok=True)
