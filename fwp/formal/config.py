"""Typed configuration of a formal-language run, its JSON form and its command-line flags.

One source of truth: every field of :class:`RunConfig` (and of its nested :class:`ModelConfig`)
becomes a ``--flag`` (underscores → dashes) that overrides a preset file (``--config FILE.json``)
which overrides the defaults below.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fwp.errors import UserError


@dataclass
class ModelConfig:
    """Token embedding → LayerStack of ``layers`` × ``model`` → LayerNorm → multi-label head."""

    model: str = "lstm"  # a layer name registered in fwp.layers.LAYERS
    layers: int = 2
    d_model: int = 64
    heads: int = 4
    d_ff: int = 256
    dropout: float = 0.0
    pos_encoding: str = "none"  # "none" (as Irie et al. 2023) or "sinusoidal"
    # Keyword options of the layer class, e.g. {"n_beta": 4} for srwm; JSON on the command line.
    options: dict = field(default_factory=dict)
    # "published": the public formal-language code's settings of the layer (e.g. the SRWM's) under
    # ``options``; "none": the layer's own defaults.
    layer_defaults: str = "published"
    # Block residual: "published" (the public code's block of the layer), or pre_norm, normed,
    # normed_skip (see fwp.layers.Block).
    residual: str = "published"


PROTOCOLS = ("published", "stream")
SELECTIONS = ("validation", "published", "last")


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

    language: str = "parity"
    network: ModelConfig = field(default_factory=ModelConfig)
    train_bin: str = "1-50"  # training bin (lengths; n for the counter languages)
    bins: list[str] = field(default_factory=lambda: ["1-50", "51-100"])  # test bins
    protocol: str = "published"  # "published" (fixed data sets, epochs) or "stream"
    train_size: int = 10_000  # training strings (published protocol)
    valid_size: int = 500  # validation strings (from the training bin's distribution)
    eval_size: int = 500  # test strings per bin
    data_seed: int = 1234  # seeds the data sets (the same for every model)
    seed: int = 1  # seeds initialisation and the order (or stream) of training strings
    epochs: int = 300  # passes over the training set (published protocol)
    steps: int = 3000  # optimiser steps (stream protocol)
    batch_size: int = 32
    lr: float = 1e-3
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.995])
    adam_eps: float = 1e-9
    weight_decay: float = 0.0  # decoupled (AdamW); 0 is Adam
    grad_clip: float = 0.0  # max gradient norm (0: no clipping, as the public code)
    eval_every: int = 250  # steps between evaluations for selection (and checkpoints)
    selection: str = "validation"  # "validation", "published" (reads the test bins) or "last"
    # Stop once the selection score has been 100 % this many evaluations in a row (0: never).
    stop_after_perfect: int = 1
    threads: int = 0  # torch CPU threads (0: leave torch's default)

    def validate(self) -> None:
        from fwp.formal.data import Bin
        from fwp.formal.languages import get_language

        get_language(self.language)
        Bin.parse(self.train_bin)
        if not self.bins:
            raise UserError("no test bins given; pass e.g. --bins 1-50 51-100")
        for b in self.bins:
            Bin.parse(b)
        if self.protocol not in PROTOCOLS:
            raise UserError(f"unknown --protocol {self.protocol!r}; use published or stream")
        if self.selection not in SELECTIONS:
            raise UserError(
                f"unknown --selection {self.selection!r}; use validation (never reads the test "
                f"bins), published (the public code's best mean over the test bins) or last"
            )
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
                raise UserError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive (got {self.lr})")
        if self.network.d_model % self.network.heads:
            raise UserError(
                f"--d-model {self.network.d_model} is not divisible by --heads "
                f"{self.network.heads}; pick sizes with d_model % heads == 0"
            )
        if self.network.pos_encoding not in ("none", "sinusoidal"):
            raise UserError(
                f"unknown --pos-encoding {self.network.pos_encoding!r}; use none or sinusoidal"
            )
        if self.network.layer_defaults not in ("published", "none"):
            raise UserError(
                f"unknown --layer-defaults {self.network.layer_defaults!r}; use published or none"
            )
        from fwp.layers.block import RESIDUALS

        if self.network.residual not in ("published", *RESIDUALS):
            raise UserError(
                f"unknown --residual {self.network.residual!r}; use published or one of "
                f"{', '.join(RESIDUALS)}"
            )
        if not 0.0 <= self.network.dropout < 1.0:
            raise UserError(f"--dropout must be in [0, 1) (got {self.network.dropout})")


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a (possibly partial) dict; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise UserError(
            f"unknown field(s) {', '.join(sorted(unknown))} in {where}; "
            f"known fields: {', '.join(sorted(known))}"
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(hint, value, name)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    try:
        if origin is list:
            if not isinstance(value, (list, tuple)):
                raise TypeError
            (item,) = typing.get_args(hint)
            return [item(v) for v in value]
        if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if hint in (int, str, bool, dict) and isinstance(value, hint):
            return value
    except (TypeError, ValueError):
        pass
    raise UserError(f"field {name!r} needs a {getattr(hint, '__name__', hint)}, got {value!r}")


def load_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise UserError(f"config file {path} is not valid JSON: {error}") from None


# -- command line -----------------------------------------------------------------------------


def _leaves(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(path, type) of every non-dataclass field, depth first."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out.extend(_leaves(hint, prefix + (f.name,)))
        else:
            out.append((prefix + (f.name,), hint))
    return out


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per leaf field of :class:`RunConfig` (default: not given)."""
    defaults = to_dict(RunConfig())
    parser.add_argument("--config", metavar="FILE.json",
                        help="preset file with any fields of the run config")
    for path, hint in _leaves(RunConfig):
        name = path[-1]
        if name in skip:
            continue
        default = defaults
        for key in path:
            default = default[key]
        flag = "--" + name.replace("_", "-")
        if typing.get_origin(hint) is list:
            (item,) = typing.get_args(hint)
            parser.add_argument(flag, dest=name, type=item, nargs="+", default=None,
                                help=f"(default: {' '.join(map(str, default))})")
        elif hint is dict:
            parser.add_argument(flag, dest=name, type=_json_object, default=None,
                                help=f"JSON object (default: {json.dumps(default)})")
        elif hint is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                default=None, help=f"(default: {default})")
        else:
            parser.add_argument(flag, dest=name, type=hint, default=None,
                                help=f"(default: {default})")


def config_from_args(args: argparse.Namespace, **fixed: Any) -> RunConfig:
    """Defaults ← ``--config`` file ← flags given ← ``fixed`` (leaf name → value)."""
    data = to_dict(RunConfig())
    if getattr(args, "config", None):
        _merge(data, load_json(args.config), args.config)
    for path, _ in _leaves(RunConfig):
        value = fixed.get(path[-1], getattr(args, path[-1], None))
        if value is not None:
            node = data
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
    config = from_dict(RunConfig, data)
    config.validate()
    return config


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('needs a JSON object, e.g. \'{"n_beta": 4}\'')
    return value


def _merge(base: dict, update: dict, where: str) -> None:
    for key, value in update.items():
        if key not in base:
            raise UserError(f"unknown field {key!r} in {where}; known: {', '.join(base)}")
        if isinstance(base[key], dict) and key != "options":
            if not isinstance(value, dict):
                raise UserError(f"field {key!r} in {where} must be an object")
            _merge(base[key], value, where)
        else:
            base[key] = value
