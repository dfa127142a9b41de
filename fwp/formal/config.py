"""Typed configuration of a formal-language run, its JSON form and its command-line flags.

One source of truth: every field of :class:`RunConfig` (and of its nested :class:`ModelConfig`)
becomes a ``--flag`` (underscores → dashes) that overrides a preset file (``--config FILE.json``)
which overrides the defaults below (see :mod:`fwp.config`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from fwp import config as core
from fwp.config import check_choices, flag_name, option, section
from fwp.errors import UserError

PROTOCOLS = ("published", "stream")
SELECTIONS = ("validation", "published", "last")


PUBLISHED_LAYERS: dict[str, tuple[dict, str]] = {
    # SRWMlayer of the public code: 4 rates, w_b mean −1, W_q std 0.01/√D (others 1/√D), and
    # out = LN(h) + Drop(Lin(SRWM(h))) with the SRWM reading the raw h.
    "srwm": ({"n_beta": 4, "beta_init_mean": -1.0, "query_init_scale": 0.01}, "normed_skip"),
}
"""layer → (options, residual) of the public formal-language code (other layers: pre_norm)."""


@dataclass
class ModelConfig:
    """Token embedding → LayerStack of ``layers`` × ``model`` → LayerNorm → multi-label head."""

    model: str = option("lstm", "sequence layer (a registered layer)", choices="fwp.layers:LAYERS")
    layers: int = option(2, "blocks of [layer, feed-forward]")
    d_model: int = option(64, "width of the blocks")
    heads: int = option(4, "heads of the layer")
    d_ff: int = option(256, "inner size of the feed-forward blocks")
    dropout: float = option(0.0, "dropout in the blocks")
    pos_encoding: str = option("none", "none (as Irie et al. 2023) or sinusoidal",
                               choices=("none", "sinusoidal"))
    layer_options: dict[str, Any] = option(
        {}, "a keyword option of the layer class, e.g. n_beta=4 for srwm (or a JSON object)",
        flag="layer-option", aliases=("options",))
    layer_defaults: str = option(
        "published", "published: the public formal-language code's settings of the layer (e.g. "
        "the SRWM's) under the layer options; none: the layer's own defaults",
        choices=("published", "none"))
    residual: str = option(
        "published", "block residual: published (the public code's block of the layer) or one "
        "of fwp.layers.Block's", choices="fwp.formal.model:RESIDUALS")

    def layer_settings(self) -> tuple[dict, str]:
        """The layer options and block residual this model config resolves to."""
        options, residual = {}, "pre_norm"
        if self.layer_defaults == "published" and self.model in PUBLISHED_LAYERS:
            options, residual = PUBLISHED_LAYERS[self.model]
        if self.residual != "published":
            residual = self.residual
        return {**options, **self.layer_options}, residual


@dataclass
class RunConfig:
    """One training run: a language, a model, and how to train and test it.

    ``protocol="published"`` (default): Bhattamishra et al.'s fixed data sets (see
    :mod:`fwp.formal.data`), ``epochs`` passes over the training set, Adam (0.9, 0.995), eps 1e-9,
    no clipping, as the public code of Irie, Csordás & Schmidhuber (2023). ``"stream"``: fresh
    uniformly sampled strings every step, ``steps`` steps.

    ``selection`` names the model kept: ``"validation"`` the best validation accuracy (ties: the
    lower validation loss), which never reads a test bin; ``"published"`` the best mean sequence
    accuracy over the test bins, the public code's rule (it selects on the test bins);
    ``"last"`` the final model. Training stops once the selection score has been 100 %
    ``stop_after_perfect`` evaluations in a row (the public code: 1, on the test bins).
    """

    language: str = option("parity", "the language or task (tasks also as NAME:KEY=VALUE,…)",
                           choices="fwp.formal.languages:SEQUENCE_TASKS")
    network: ModelConfig = section(ModelConfig)
    train_bin: str = option("1-50", "training bin (lengths; n for the counter languages)")
    bins: list[str] = option(["1-50", "51-100"], "test bins LO-HI")
    protocol: str = option("published", "published (fixed data sets, epochs) or stream",
                           choices=PROTOCOLS)
    train_size: int = option(10_000, "training strings (published protocol)")
    valid_size: int = option(500, "validation strings (from the training bin's distribution)")
    eval_size: int = option(500, "test strings per bin")
    data_seed: int = option(1234, "seeds the data sets (the same for every model)")
    seed: int = option(1, "seeds initialisation and the order (or stream) of training strings")
    epochs: int = option(300, "passes over the training set (published protocol)",
                         resume="announce")
    steps: int = option(3000, "optimiser steps (stream protocol)", resume="announce")
    batch_size: int = option(32, "strings per step")
    lr: float = option(1e-3, "Adam's learning rate")
    adam_betas: list[float] = option([0.9, 0.995], "Adam's β1 β2")
    adam_eps: float = option(1e-9, "Adam's ε")
    weight_decay: float = option(0.0, "decoupled weight decay (AdamW); 0 is Adam")
    grad_clip: float = option(0.0, "max gradient norm (0: no clipping, as the public code)")
    eval_every: int = option(250, "steps between evaluations for selection (and checkpoints)")
    selection: str = option(
        "validation", "the model kept: validation (never reads the test bins), published (the "
        "public code's best mean over the test bins) or last", choices=SELECTIONS)
    stop_after_perfect: int = option(
        1, "stop once the selection score has been 100 % this many evaluations in a row "
        "(0: never)")
    threads: int = option(0, "torch CPU threads (0: leave torch's default)", resume="runtime")

    def validate(self) -> None:
        from fwp.formal.data import Bin
        from fwp.formal.languages import get_language

        get_language(self.language)  # also takes a few aliases, e.g. dyck1
        check_choices(self, skip=("language",))
        from fwp.layers import check_layer_options

        check_layer_options(self.network.model, self.network.layer_settings()[0])
        Bin.parse(self.train_bin)
        if not self.bins:
            raise UserError("no test bins given; pass e.g. --bins 1-50 51-100")
        for b in self.bins:
            Bin.parse(b)
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise UserError(f"--adam-betas needs two numbers in [0, 1), got {self.adam_betas}")
        positive = {
            "steps": self.steps, "epochs": self.epochs, "train_size": self.train_size,
            "valid_size": self.valid_size,
            "batch_size": self.batch_size, "eval_size": self.eval_size,
            "eval_every": self.eval_every, "layers": self.network.layers,
            "d_model": self.network.d_model, "heads": self.network.heads,
            "d_ff": self.network.d_ff,
        }
        for name, value in positive.items():
            if value < 1:
                raise UserError(f"--{flag_name(name)} must be at least 1 (got {value})")
        repeated = sorted({str(Bin.parse(b)) for b in self.bins if self.bins.count(b) > 1})
        if repeated:
            raise UserError(f"--bins names {', '.join(repeated)} twice; give each bin once")
        for name in ("threads", "weight_decay", "grad_clip", "stop_after_perfect"):
            if getattr(self, name) < 0:
                raise UserError(f"--{flag_name(name)} must be ≥ 0 (got {getattr(self, name)})")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive (got {self.lr})")
        if self.network.d_model % self.network.heads:
            raise UserError(
                f"--d-model {self.network.d_model} is not divisible by --heads "
                f"{self.network.heads}; pick sizes with d_model % heads == 0"
            )
        if not 0.0 <= self.network.dropout < 1.0:
            raise UserError(f"--dropout must be in [0, 1) (got {self.network.dropout})")

    def unused(self) -> dict[str, str]:
        """Fields this run never reads, each with why (a flag given for one is refused)."""
        if self.protocol == "published":
            return {"steps": "it counts the steps of --protocol stream; the published protocol "
                             "trains --epochs passes over its fixed data sets (or add "
                             "--protocol stream)"}
        why = ("it sizes the published protocol's fixed data sets; --protocol stream trains "
               "--steps steps on fresh strings")
        return {"epochs": why, "train_size": why}


def from_dict(data: dict, where: str = "config") -> RunConfig:
    """A :class:`RunConfig` from a (possibly partial) nested dict; unknown keys are an error."""
    return core.from_dict(RunConfig, data, where)


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """``--config`` and one ``--flag`` per leaf field but ``skip`` (default: not given)."""
    parser.add_argument("--config", metavar="FILE.json",
                        help="preset file with any fields of the run config (.json or .toml)")
    core.add_flags(parser, RunConfig, skip)


def config_from_args(args: argparse.Namespace, layers: list[tuple[str, dict]] = (),
                     **fixed: Any) -> RunConfig:
    """Defaults ← ``layers`` (a grid's (where, partial config)) ← ``--config`` file ← flags given
    ← ``fixed`` (leaf name → value); validated."""
    from fwp.environment import warn_threads

    path = getattr(args, "config", None)
    flags = core.given(argparse.Namespace(**{**vars(args), **fixed}), RunConfig)
    config = core.resolve(RunConfig, [
        *layers,
        (str(path), core.read_file(path) if path else None),
        ("the command line", flags),
    ])
    config.validate()
    core.refuse_unused(config, flags)
    warn_threads(config.threads)
    return config
