"""Typed configuration of a few-shot run, its preset files and its command-line flags.

One source of truth: every leaf field of :class:`RunConfig` becomes a ``--flag`` (underscores →
dashes). A value comes from, last one winning: the defaults below ← ``--preset NAME`` (a file in
``fwp/fewshot/presets/``) ← ``--config FILE`` (``.toml`` or ``.json``) ← flags given.

Preset and config files use the sections of :class:`RunConfig` (``[data]``, ``[network]``,
``[loss]``, ``[optim]``) and top-level keys; ``base = "NAME"`` starts from another preset.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fwp.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PRESETS_DIR = Path(__file__).parent / "presets"
DATASETS = ("glyphs", "cluttered_glyphs", "omniglot", "miniimagenet", "folder")
DISTILL = ("ce", "kl", "weights")
SCHEDULES = ("noam", "cosine", "constant")
# Conv-4 width per data set when --conv-channels is 0 (REFERENCE §2: Omniglot 64, Mini-ImageNet 32).
CONV_CHANNELS = {
    "glyphs": 64, "cluttered_glyphs": 32, "omniglot": 64, "miniimagenet": 32, "folder": 32,
}


@dataclass
class DataConfig:
    """Which episodes: data set, N-way K-shot, and the K′ extra shots of bootstrapping."""

    dataset: str = "glyphs"  # glyphs, cluttered_glyphs (built in), omniglot, miniimagenet, folder
    data_root: str = ""  # folder with the data set's files ("" for the built-in glyphs)
    # keyword options of the loader, e.g. {rotations = true, split_scheme = "vinyals"} (Omniglot)
    data_options: dict[str, Any] = field(default_factory=dict)
    n_way: int = 5  # N: classes per episode
    k_shot: int = 5  # K: labelled examples per class before the query
    k_extra: int = 0  # K′: extra examples per class fed after the support set (Eq. 5)
    n_query: int = 1  # queries per class and episode in training
    single_query: bool = False  # one query per episode, the first of N·n_query (public code)
    val_split: str = "val"  # split of the validation episodes


@dataclass
class NetworkConfig:
    """Backbone → [features ⊕ label] → linear → ``layers`` × ``model`` blocks → linear to N."""

    model: str = "srwm"  # sequence core: srwm | deltanet | linear | lstm | transformer
    backbone: str = "conv4"  # conv4 | resnet12
    conv_channels: int = 0  # 0: the data set's Conv-4 width (64 Omniglot/glyphs, 32 Mini-ImageNet)
    conv_dropout: float = 0.0
    layers: int = 3  # blocks of [core layer, feed-forward]
    d_model: int = 256
    heads: int = 16
    d_ff: int = 2048  # inner size of the feed-forward blocks
    dropout: float = 0.0
    # normed_skip: LN(h) + Drop(core(h)), the public few-shot SRWM code's block;
    # normed: LN(h) + Drop(core(LN h)); pre_norm: h + Drop(core(LN h))
    residual: str = "normed"  # normed_skip (public code) | normed | pre_norm
    final_norm: bool = True  # LayerNorm before the classifier (the public code has none)
    # In training, BatchNorm normalises each backbone call on its own batch of images.
    separate_backbone_calls: bool = False  # support, query, extra: one call each (public boot.)
    n_beta: int = 1  # SRWM learning rates: 1 (paper) or 4 (one per block, public code)
    input_softmax: bool = False  # SRWM: softmax on the layer input (off in the few-shot papers)
    beta_init: float = 0.0  # SRWM: mean of the initial β rows (0: learning rates start near ½)
    key_identity: float = 0.0  # SRWM: c·I added to W0's key block (0: the public code's init)
    feature_map: str = "elu+1_sum"  # deltanet / linear: φ of keys and queries (see fwp.ops)
    core_mode: str = "auto"  # operator path of srwm/deltanet/linear: auto | recurrent | scan | ...


@dataclass
class LossConfig:
    """Eq. 5: β1·CE(q, p_NK) + β2·D(sg(p_N(K+K′)), p_NK) + β3·CE(q, p_N(K+K′))."""

    beta1: float = 1.0  # weight of CE(q, p_NK), the K-shot loss
    beta2: float = 0.0  # weight of the distillation term (bootstrapping)
    beta3: float = 0.0  # weight of CE(q, p_N(K+K′)), the (K+K′)-shot loss
    distill: str = "ce"  # ce | kl | weights (MSE of the fast weights at NK and sg(N(K+K′)))


@dataclass
class OptimConfig:
    """Adam with the Noam warm-up (lr = lr·d_model^−½·min(s^−½, s·w^−1.5)) or a cosine schedule."""

    schedule: str = "noam"  # noam | cosine (linear warm-up, then cosine to 0) | constant
    lr: float = 1.0  # noam: the scale; cosine / constant: the peak learning rate
    warmup: int = 5000
    adam_beta1: float = 0.9
    adam_beta2: float = 0.995
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm (0: no clipping)
    batch_size: int = 16  # episodes per micro-batch and process
    accumulate: int = 1  # micro-batches per optimiser step


@dataclass
class RunConfig:
    """One training run. Episodes per step = batch_size · accumulate · processes."""

    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 1  # initialisation and the stream of training episodes
    steps: int = 100_000
    eval_every: int = 1000  # validate on fixed episodes, keep the best checkpoint
    val_episodes: int = 500
    log_every: int = 50
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    threads: int = 0  # torch CPU threads (0: torch's default)
    test_episodes: int = 1000  # fwp fewshot eval: episodes per K_test and repeat
    test_repeats: int = 1  # fwp fewshot eval: repeats of test_episodes (paper ±: std over them)

    @property
    def bootstrapped(self) -> bool:
        """Whether the K′ extra examples are needed (β2 or β3 non-zero)."""
        return self.loss.beta2 > 0 or self.loss.beta3 > 0

    def conv_channels(self) -> int:
        return self.network.conv_channels or CONV_CHANNELS[self.data.dataset]

    def validate(self) -> None:
        from fwp.fewshot.backbones import BACKBONES
        from fwp.layers import LAYERS
        from fwp.layers.block import RESIDUALS

        choices = {
            "dataset": (self.data.dataset, DATASETS),
            "model": (self.network.model, tuple(sorted(LAYERS))),
            "backbone": (self.network.backbone, BACKBONES),
            "residual": (self.network.residual, RESIDUALS),
            "distill": (self.loss.distill, DISTILL),
            "schedule": (self.optim.schedule, SCHEDULES),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise UserError(f"unknown --{name} {value!r}; choose one of {', '.join(allowed)}")
        at_least = {
            "n_way": (self.data.n_way, 2), "k_shot": (self.data.k_shot, 1),
            "k_extra": (self.data.k_extra, 0), "n_query": (self.data.n_query, 1),
            "conv_channels": (self.network.conv_channels, 0), "layers": (self.network.layers, 1),
            "d_model": (self.network.d_model, 1), "heads": (self.network.heads, 1),
            "d_ff": (self.network.d_ff, 1), "warmup": (self.optim.warmup, 0),
            "batch_size": (self.optim.batch_size, 1), "accumulate": (self.optim.accumulate, 1),
            "steps": (self.steps, 1), "eval_every": (self.eval_every, 1),
            "val_episodes": (self.val_episodes, 1), "log_every": (self.log_every, 1),
            "threads": (self.threads, 0), "test_episodes": (self.test_episodes, 1),
            "test_repeats": (self.test_repeats, 1),
        }
        for name, (value, low) in at_least.items():
            if value < low:
                raise UserError(f"--{flag(name)} must be at least {low} (got {value})")
        for name in ("beta1", "beta2", "beta3"):
            if getattr(self.loss, name) < 0:
                raise UserError(f"--{name} must be ≥ 0 (got {getattr(self.loss, name)})")
        if self.loss.beta1 + self.loss.beta2 + self.loss.beta3 == 0:
            raise UserError("--beta1, --beta2 and --beta3 are all 0: nothing to train")
        if self.bootstrapped and self.data.k_extra < 1:
            raise UserError(
                f"--beta2 {self.loss.beta2} / --beta3 {self.loss.beta3} need the extra examples: "
                "set --k-extra K' ≥ 1 (or --beta2 0 --beta3 0 for plain K-shot training)"
            )
        if self.loss.distill == "weights" and self.network.model == "transformer":
            raise UserError(
                "--distill weights compares the fast weights at N·K and N·(K+K'); the "
                "transformer's state is a key/value cache that grows with the sequence: "
                "use --distill ce or kl"
            )
        if self.network.d_model % self.network.heads and self.network.model != "lstm":
            raise UserError(
                f"--d-model {self.network.d_model} is not divisible by --heads "
                f"{self.network.heads}; pick sizes with d_model % heads == 0"
            )
        if self.network.n_beta not in (1, 4):
            raise UserError(f"--n-beta must be 1 or 4 (got {self.network.n_beta})")
        if self.network.model in ("deltanet", "linear"):
            from fwp.ops import get_feature_map

            get_feature_map(self.network.feature_map)
        if self.optim.lr <= 0:
            raise UserError(f"--lr must be positive (got {self.optim.lr})")
        if self.optim.adam_eps <= 0:
            raise UserError(f"--adam-eps must be positive (got {self.optim.adam_eps})")
        if self.optim.grad_clip < 0:
            raise UserError(f"--grad-clip must be ≥ 0 (got {self.optim.grad_clip})")
        if self.optim.schedule == "noam" and self.optim.warmup < 1:
            raise UserError("the noam schedule needs --warmup ≥ 1")
        for name in ("dropout", "conv_dropout"):
            if not 0.0 <= getattr(self.network, name) < 1.0:
                raise UserError(f"--{flag(name)} must be in [0, 1)")
        if self.device != "auto" and not self.device.startswith(("cpu", "cuda")):
            raise UserError(f"unknown --device {self.device!r}; use auto, cpu, cuda or cuda:N")


def flag(name: str) -> str:
    return name.replace("_", "-")


def to_dict(config: RunConfig) -> dict:
    return dataclasses.asdict(config)


def from_dict(data: dict, where: str = "config") -> RunConfig:
    """A :class:`RunConfig` from a (possibly partial) nested dict; unknown keys are an error."""
    merged = to_dict(RunConfig())
    merge(merged, data, where)
    return _build(RunConfig, merged, where)


def _build(cls: type, data: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        hint, value = hints[f.name], data[f.name]
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _build(hint, value, f"{where}.{f.name}")
        else:
            kwargs[f.name] = _coerce(hint, value, f"{where}: {f.name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if typing.get_origin(hint) is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
        raise UserError(f"{where} needs a table of options, got {value!r}")
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise UserError(f"{where} needs a {hint.__name__}, got {value!r}")


SECTIONS = ("data", "network", "loss", "optim")


def merge(base: dict, update: dict, where: str, sections: tuple[str, ...] = SECTIONS) -> None:
    """Write ``update`` into ``base`` in place, section by section."""
    for key, value in update.items():
        if key not in base:
            raise UserError(f"unknown field {key!r} in {where}; known: {', '.join(base)}")
        if key in sections:
            if not isinstance(value, dict):
                raise UserError(f"{key!r} in {where} must be a section [{key}]")
            merge(base[key], value, f"{where} [{key}]", ())
        else:
            base[key] = value


def read_file(path: str | Path) -> dict:
    """A config dict from a ``.toml`` or ``.json`` file, following ``base = "PRESET"``."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise UserError(f"config file {path} is not valid {path.suffix[1:]}: {error}") from None
    base = data.pop("base", None)
    if base is None:
        return data
    combined = preset(base)
    _deep_update(combined, data)
    return combined


def _deep_update(base: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def preset(name: str) -> dict:
    """The (partial) config dict of preset ``name``."""
    path = PRESETS_DIR / f"{name}.toml"
    if not path.is_file():
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())}")
    return read_file(path)


# -- command line -----------------------------------------------------------------------------


def leaves(
    cls: type = RunConfig, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], Any]]:
    """(path, type) of every non-dataclass field, depth first."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out.extend(leaves(hint, prefix + (f.name,)))
        else:
            out.append((prefix + (f.name,), hint))
    return out


def _parse_as(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a{'n' if kind is int else ''} "
                                             f"{kind.__name__}: {text!r}") from None

    parse.__name__ = kind.__name__
    return parse


def _option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as a TOML value where it parses as one, else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value


def _field_comments() -> dict[str, str]:
    """The comment after each field above, as its ``--help`` text (written once, shown twice)."""
    import re

    source = Path(__file__).read_text()
    return {m[1]: m[2] for m in re.finditer(r"^    (\w+): [^\n=]+=[^\n#]*#\s*(.+)$", source, re.M)}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """``--preset``, ``--config`` and one ``--flag`` per leaf field (default: not given)."""
    defaults = to_dict(RunConfig())
    parser.add_argument("--preset", metavar="NAME",
                        help=f"start from a preset: {', '.join(preset_names())}")
    parser.add_argument("--config", metavar="FILE",
                        help="a .toml or .json file with any fields of the run config")
    groups = {}
    comments = _field_comments()
    for path, hint in leaves():
        section = path[0] if len(path) > 1 else "run"
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} options")
        default = defaults
        for key in path:
            default = default[key]
        name = flag(path[-1])
        note = f"{comments[path[-1]]} " if path[-1] in comments else ""
        if typing.get_origin(hint) is dict:
            groups[section].add_argument(f"--{name[:-1]}", dest=path[-1], action="append",
                                         type=_option, metavar="KEY=VALUE",
                                         help="a loader option, e.g. rotations=true (repeatable)")
        elif hint is bool:
            groups[section].add_argument(f"--{name}", dest=path[-1], default=None,
                                         action=argparse.BooleanOptionalAction,
                                         help=f"{note}(default: {default})")
        else:
            groups[section].add_argument(f"--{name}", dest=path[-1], default=None,
                                         type=_parse_as(hint), metavar=hint.__name__.upper(),
                                         help=f"{note}(default: {default!r})")


def overrides_from_args(args: argparse.Namespace) -> dict:
    """The config fields given as flags, as a nested dict."""
    data: dict = {}
    for path, hint in leaves():
        value = getattr(args, path[-1], None)
        if value is not None:
            if typing.get_origin(hint) is dict:
                value = dict(value)
            node = data
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
    return data


def config_from_args(args: argparse.Namespace, base: dict | None = None) -> RunConfig:
    """Defaults ← ``base`` ← ``--preset`` ← ``--config`` ← flags given; validated."""
    data = to_dict(RunConfig())
    if base is not None:
        merge(data, base, "the saved config")
    if getattr(args, "preset", None):
        merge(data, preset(args.preset), f"preset {args.preset}")
    if getattr(args, "config", None):
        merge(data, read_file(args.config), args.config)
    overrides = overrides_from_args(args)
    # Loader options given as flags add to those of the preset / config file.
    extra = overrides.get("data", {}).pop("data_options", None)
    merge(data, overrides, "the command line")
    data["data"]["data_options"].update(extra or {})
    config = from_dict(data)
    config.validate()
    return config
