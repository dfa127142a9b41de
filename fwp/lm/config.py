"""Typed configuration of a language-model run (see :mod:`fwp.config` for files and flags).

Defaults are our CPU-scale choice (a small byte-level model that learns in minutes on two cores).
The public recurrent-FWP code's WikiText-103 settings are the ``published_small`` preset: 16
layers of width 128 (8 heads of 16), feed-forward 2048, dropout 0.1, Adam at 2.5e-4 with 2,000
warm-up steps and a cosine decay over 500,000 steps, gradient clipping 0.25, segments of 256
tokens, batch 96, tied embeddings, and state carried across segments without positional encoding
(its "+ full context" runs).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fwp import config as core
from fwp.config import flag_name, option, section
from fwp.errors import UserError

PRESETS = Path(__file__).resolve().parent / "presets"


@dataclass
class ModelConfig:
    """Embedding → blocks of ``layers`` → LayerNorm → output tied to the embedding."""

    layers: list[str] = option(
        ["deltanet", "deltanet"], "layer names, one per block, e.g. deltanet deltanet "
        "transformer (or deltanet,deltanet,transformer; deltanet*2)")
    d_model: int = option(128, "width of the blocks")
    heads: int = option(4, "heads per layer")
    d_ff: int = option(512, "inner size of the feed-forward blocks")
    dropout: float = option(0.0, "dropout in the blocks and on the embedding")
    options: dict[str, Any] = option(
        {}, "a layer's keyword option as LAYER.OPTION=VALUE, e.g. deltanet.feature_map=l2 or "
        "srwm.n_beta=4", flag="layer-option")
    tie_embeddings: bool = option(True, "share the embedding with the output layer")


@dataclass
class LMConfig:
    """One language-model run: the text, the model, and how to train it.

    Training reads contiguous segments (:class:`fwp.lm.segments.Segments`); with
    ``carry_state`` each segment starts from the previous segment's final state, detached
    (truncated backpropagation); without, from the zero state.
    """

    data: str = option("stdlib", "the text: the built-in corpus stdlib, a text file, a folder "
                       "(train/valid/test files or WikiText-103's wiki.*.tokens) or enwik8")
    tokenizer: str = option("bytes", "bytes, chars, or the path of a tokenizers JSON file")
    network: ModelConfig = section(ModelConfig)
    segment_len: int = option(128, "tokens per training segment (truncation length)")
    batch_size: int = option(16, "segments per step (parallel streams of the text)")
    carry_state: bool = option(
        True, "start each segment from the previous one's final state (truncated "
        "backpropagation); --no-carry-state resets it every segment")
    attention_window: int = option(
        0, "keys kept from earlier segments by softmax layers when the state is carried "
        "(Transformer-XL memory; 0: one segment)")
    steps: int = option(2000, "optimiser steps", resume="announce")
    lr: float = option(2e-3, "peak learning rate (Adam)", resume="announce")
    warmup_steps: int = option(100, "linear warm-up steps, then cosine decay to 0",
                               resume="announce")
    adam_betas: list[float] = option([0.9, 0.999], "Adam's β1 β2", resume="announce")
    weight_decay: float = option(0.0, "decoupled weight decay (AdamW); 0 is Adam",
                                 resume="announce")
    grad_clip: float = option(0.25, "max gradient norm (0: none; the public code: 0.25)",
                              resume="announce")
    eval_every: int = option(250, "steps between validations (and checkpoints)", resume="announce")
    eval_tokens: int = option(100_000, "validation tokens per evaluation during training "
                              "(0: the whole split)", resume="announce")
    final_eval_tokens: int = option(0, "validation tokens scored at the end of training, with "
                                    "carried and with reset state (0: the whole split)",
                                    resume="announce")
    eval_streams: int = option(1, "rows the evaluated text is cut into (1: one stream, every "
                               "prediction sees all the text before it)", resume="announce")
    time_limit: float = option(
        0.0, "minutes of training after which the run ends as if its steps were done (best "
        "model evaluated and sampled; 0: no limit)", resume="announce")
    seed: int = option(1, "seeds initialisation")
    threads: int = option(0, "torch CPU threads (0: leave torch's default)", resume="runtime")
    sample_tokens: int = option(200, "tokens sampled from the model at the end of training",
                                resume="announce")

    @property
    def window(self) -> int:
        """Keys a softmax layer keeps from earlier segments when the state is carried, in
        training and in the carried evaluation (a run trained with resets too: its carried
        evaluation must not keep the whole text, which would cost O(T²))."""
        return self.attention_window or self.segment_len

    def validate(self) -> None:
        from fwp.lm.model import parse_layers

        self.network.layers = parse_layers(self.network.layers)
        positive = {
            "segment_len": self.segment_len, "batch_size": self.batch_size,
            "steps": self.steps, "eval_every": self.eval_every, "d_model": self.network.d_model,
            "heads": self.network.heads, "d_ff": self.network.d_ff,
            "eval_streams": self.eval_streams,
        }
        for name, value in positive.items():
            if value < 1:
                raise UserError(f"--{flag_name(name)} must be at least 1 (got {value})")
        for name in ("attention_window", "warmup_steps", "eval_tokens", "sample_tokens",
                     "final_eval_tokens", "threads", "time_limit", "grad_clip", "weight_decay"):
            if getattr(self, name) < 0:
                raise UserError(f"--{flag_name(name)} must be ≥ 0 (got {getattr(self, name)})")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive (got {self.lr})")
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise UserError(f"--adam-betas needs two numbers in [0, 1), got {self.adam_betas}")
        if not 0.0 <= self.network.dropout < 1.0:
            raise UserError(f"--dropout must be in [0, 1) (got {self.network.dropout})")
        if self.attention_window and not self.carry_state:
            raise UserError("--attention-window applies only when the state is carried; drop "
                            "it or drop --no-carry-state")

    def spec(self, vocab_size: int):  # noqa: ANN201 — LMSpec, imported lazily
        from fwp.lm.model import LMSpec, split_layer_options

        n = self.network
        return LMSpec(vocab_size, list(n.layers), n.d_model, n.heads, n.d_ff, n.dropout,
                      split_layer_options(n.options), n.tie_embeddings)


def from_dict(data: dict, where: str = "config") -> LMConfig:
    return core.from_dict(LMConfig, data, where)


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    parser.add_argument("--config", metavar="FILE.toml",
                        help="a file with any fields of the run config (.toml or .json)")
    parser.add_argument("--preset", metavar="NAME", default=None,
                        help=f"a preset of fwp/lm/presets: "
                             f"{', '.join(core.preset_names(PRESETS))}")
    core.add_flags(parser, LMConfig, skip)


def config_from_args(args: argparse.Namespace) -> LMConfig:
    """Defaults ← ``--preset`` ← ``--config`` file ← flags given; validated."""
    preset, path = getattr(args, "preset", None), getattr(args, "config", None)
    config = core.resolve(LMConfig, [
        (f"preset {preset}", core.read_preset(PRESETS, preset, LMConfig) if preset else None),
        (str(path), core.read_file(path, PRESETS, LMConfig) if path else None),
        ("the command line", core.given(args, LMConfig)),
    ])
    config.validate()
    return config
