"""Typed configuration of a few-shot run, its preset files and its command-line flags.

One source of truth: every leaf field of :class:`RunConfig` becomes a ``--flag`` (underscores →
dashes). The defaults are a learner sized for a CPU, the network and optimiser of ``--preset demo``
(it leaves chance within about 200–300 steps on one CPU thread, docs/fewshot.md); the paper
presets are the public code's settings and are sized for a GPU.

A value comes from, last one winning: the defaults below ← ``--preset NAME`` (a file in
``fwp/fewshot/presets/``) ← ``--config FILE`` (``.toml`` or ``.json``) ← flags given.

Preset and config files use the sections of :class:`RunConfig` (``[data]``, ``[network]``,
``[loss]``, ``[optim]``) and top-level keys; ``base = "NAME"`` starts from another preset.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fwp import config as core
from fwp.config import check_choices, flag_name, option, section
from fwp.errors import UserError

PRESETS_DIR = Path(__file__).parent / "presets"
DISTILL = ("ce", "kl", "weights")
SCHEDULES = ("noam", "cosine", "constant")
QUERY_INPUTS = ("zeros", "class0")
# Conv-4 width when --conv-channels is 0: 64 for the 28×28 character data sets (Omniglot, as
# Vinyals et al. 2016 and the SRWM paper), 32 for every other (Mini-ImageNet, as Ravi & Larochelle
# 2017 and the SRWM paper; cluttered_glyphs, our choice).
CONV_CHANNELS = {"glyphs": 64, "omniglot": 64}
# Flags kept as conveniences for a layer option: field → (keyword of the layer, layers it reaches).
NAMED_LAYER_OPTIONS = {
    "n_beta": ("n_beta", ("srwm",)),
    "input_softmax": ("input_softmax", ("srwm",)),
    "beta_init": ("beta_init_mean", ("srwm",)),
    "key_identity": ("key_identity", ("srwm",)),
    "feature_map": ("feature_map", ("deltanet", "linear")),
    "core_mode": ("mode", ("srwm", "deltanet", "linear")),
}


@dataclass
class DataConfig:
    """Which episodes: data set, N-way K-shot, and the K′ extra shots of bootstrapping."""

    dataset: str = option("glyphs", "data set (glyphs and cluttered_glyphs are built in)",
                          choices="fwp.data:DATASETS")
    data_root: str = option("", "folder with the data set's files (\"\" for the built-in sets)",
                            resume="announce")
    data_options: dict[str, Any] = option(
        {}, "a keyword option of the loader, e.g. rotations=true, split_scheme=vinyals, "
        "image_size=28", flag="data-option")
    n_way: int = option(5, "N: classes per episode")
    k_shot: int = option(5, "K: labelled examples per class before the query")
    k_extra: int = option(0, "K′: extra examples per class fed after the support set (Eq. 5)")
    n_query: int = option(3, "queries per class and episode in training")
    single_query: bool = option(
        False, "one query per episode, the first of N·n_query (public code)")
    val_split: str = option("val", "split of the validation episodes",
                            choices="fwp.data:SPLITS")


@dataclass
class NetworkConfig:
    """Backbone → [features ⊕ label] → linear → ``layers`` × ``model`` blocks → linear to N."""

    model: str = option("srwm", "sequence core (a registered layer)", choices="fwp.layers:LAYERS")
    backbone: str = option("conv4", "image encoder", choices="fwp.fewshot.backbones:BACKBONES")
    conv_channels: int = option(
        32, "Conv-4 width; 0: the data set's (64 Omniglot/glyphs, 32 Mini-ImageNet)")
    conv_dropout: float = option(0.0, "dropout in the backbone")
    layers: int = option(2, "blocks of [core layer, feed-forward]")
    d_model: int = option(128, "width of the blocks")
    heads: int = option(8, "heads of the core layer")
    d_ff: int = option(256, "inner size of the feed-forward blocks")
    dropout: float = option(0.0, "dropout in the blocks")
    residual: str = option(
        "normed", "normed_skip: LN(h) + Drop(core(h)), the public few-shot SRWM code's block; "
        "normed: LN(h) + Drop(core(LN h)); pre_norm: h + Drop(core(LN h))",
        choices="fwp.layers.block:RESIDUALS")
    final_norm: bool = option(
        True, "LayerNorm before the classifier (the public code has none)")
    query_input: str = option(
        "zeros", "label input of the query: zeros (a dedicated \"no label\" input, our choice) or "
        "class0 (the one-hot of class 0, the public code's; `fwp fewshot import` sets it)",
        choices=QUERY_INPUTS)
    separate_backbone_calls: bool = option(
        False, "in training, one backbone call (so one BatchNorm batch) each for support, query "
        "and extra images (public bootstrapping code)")
    n_beta: int = option(1, "SRWM learning rates: 1 (paper) or 4 (one per block, public code)")
    input_softmax: bool = option(
        False, "SRWM: softmax on the layer input (off in the few-shot papers)")
    beta_init: float = option(
        0.0, "SRWM: mean of the initial β rows (0: learning rates start near ½)")
    key_identity: float = option(
        3.0, "SRWM: c·I added to W0's key block (0: the public code's init)")
    feature_map: str = option("elu+1_sum", "deltanet / linear: φ of keys and queries",
                              choices="fwp.ops:FEATURE_MAPS")
    short_conv: int = option(
        0, "delayed / sequential: width of a causal depthwise convolution over time on the "
        "core's input (0: none)")
    token_shift: bool = option(
        False, "delayed / sequential: step t's input also carries step t−1's image features, "
        "Lin([f(x_t); onehot(y_{t−1}); f(x_{t−1})]), so an image meets its label in one input")
    core_mode: str = option(
        "auto", "operator path of srwm/deltanet/linear: auto, or one of the operator's modes "
        "(recurrent, chunk, scan, fused_cpu, triton, ...; README, Operators)", resume="announce")
    layer_options: dict[str, Any] = option(
        {}, "a keyword option of the core layer's class, e.g. chunk_size=32 (any registered "
        "layer; wins over the named flags above)", flag="layer-option")

    def core_options(self) -> dict[str, Any]:
        """Keyword options of the ``model`` layer: the named flags that apply to it, then
        ``layer_options``."""
        named = {
            keyword: getattr(self, name)
            for name, (keyword, models) in NAMED_LAYER_OPTIONS.items()
            if self.model in models
        }
        return {**named, **self.layer_options}


@dataclass
class LossConfig:
    """Eq. 5: β1·CE(q, p_NK) + β2·D(sg(p_N(K+K′)), p_NK) + β3·CE(q, p_N(K+K′))."""

    beta1: float = option(1.0, "weight of CE(q, p_NK), the K-shot loss")
    beta2: float = option(0.0, "weight of the distillation term (bootstrapping)")
    beta3: float = option(0.0, "weight of CE(q, p_N(K+K′)), the (K+K′)-shot loss")
    distill: str = option(
        "ce", "D: ce, kl, or weights (MSE of the fast weights at NK and sg(N(K+K′)))",
        choices=DISTILL)


@dataclass
class OptimConfig:
    """Adam with the Noam warm-up (lr = lr·d_model^−½·min(s^−½, s·w^−1.5)) or a cosine schedule."""

    schedule: str = option(
        "cosine", "learning-rate schedule (cosine: linear warm-up, then cosine to 0)",
        choices=SCHEDULES, resume="announce")
    lr: float = option(1e-3, "noam: the scale; cosine / constant: the peak learning rate",
                       resume="announce")
    warmup: int = option(50, "warm-up steps", resume="announce")
    adam_beta1: float = option(0.9, "Adam's β1", resume="announce")
    adam_beta2: float = option(0.995, "Adam's β2", resume="announce")
    adam_eps: float = option(1e-8, "Adam's ε", resume="announce")
    weight_decay: float = option(0.0, "Adam's weight decay", resume="announce")
    grad_clip: float = option(1.0, "max gradient norm (0: no clipping)", resume="announce")
    batch_size: int = option(16, "episodes per micro-batch and process")
    accumulate: int = option(1, "micro-batches per optimiser step")


@dataclass
class ProtocolConfig:
    """The in-context setting (fwp/fewshot/protocols): episodes, or streams of task segments."""

    protocol: str = option(
        "episodic", "episodic (N-way K-shot), delayed (labels one step late), sequential (a "
        "stream that switches data set), continual (task A then B, queried on both)",
        choices=("episodic", "delayed", "sequential", "continual"))
    second_dataset: str = option(
        "", "sequential / continual: the other task's data set (\"\": the first, other classes)")
    second_data_root: str = option("", "folder with the second data set's files")
    second_data_options: dict[str, Any] = option(
        {}, "a keyword option of the second data set's loader", flag="second-data-option")
    max_trim: int = option(
        0, "delayed / sequential training: drop up to this many images at each segment's end")
    first_task_weight: float = option(1.0, "continual: weight w_A of CE(A | A)")
    forget_weight: float = option(
        0.0, "continual: weight λ of CE(A | A→B), the anti-forgetting term")


@dataclass
class RunConfig:
    """One training run. Episodes per step = batch_size · accumulate · processes."""

    data: DataConfig = section(DataConfig)
    network: NetworkConfig = section(NetworkConfig)
    loss: LossConfig = section(LossConfig)
    optim: OptimConfig = section(OptimConfig)
    protocol: ProtocolConfig = section(ProtocolConfig)
    seed: int = option(1, "initialisation and the stream of training episodes")
    steps: int = option(1000, "optimiser steps", resume="announce")
    eval_every: int = option(100, "validate on fixed episodes, keep the best checkpoint",
                             resume="announce")
    val_episodes: int = option(200, "validation episodes", resume="announce")
    log_every: int = option(10, "steps between logged losses", resume="runtime")
    device: str = option("auto", "auto | cpu | cuda | cuda:N", resume="runtime")
    amp: bool = option(True, "bf16 autocast on CUDA (ignored on CPU)", resume="runtime")
    threads: int = option(0, "torch CPU threads (0: torch's default)", resume="runtime")
    data_workers: int = option(
        0, "processes that assemble the training batches ahead of the step (0: the training "
        "process does, between steps); the same batches either way", resume="runtime")
    prefetch: int = option(2, "with --data-workers: batches each worker keeps ready",
                           resume="runtime")
    test_episodes: int = option(1000, "fwp fewshot eval: episodes per K_test and repeat",
                                resume="announce")
    test_repeats: int = option(
        1, "fwp fewshot eval: repeats of test_episodes (paper ±: std over them)",
        resume="announce")

    @property
    def bootstrapped(self) -> bool:
        """Whether the K′ extra examples are needed (β2 or β3 non-zero)."""
        return self.loss.beta2 > 0 or self.loss.beta3 > 0

    @property
    def k_extra_used(self) -> int:
        """K′ of the training episodes: ``data.k_extra`` when bootstrapping, else 0."""
        return self.data.k_extra if self.bootstrapped else 0

    def conv_channels(self) -> int:
        return self.network.conv_channels or CONV_CHANNELS.get(self.data.dataset, 32)

    def validate(self) -> None:
        check_choices(self)
        at_least = {
            "n_way": (self.data.n_way, 2), "k_shot": (self.data.k_shot, 1),
            "k_extra": (self.data.k_extra, 0), "n_query": (self.data.n_query, 1),
            "conv_channels": (self.network.conv_channels, 0), "layers": (self.network.layers, 1),
            "d_model": (self.network.d_model, 1), "heads": (self.network.heads, 1),
            "d_ff": (self.network.d_ff, 1), "warmup": (self.optim.warmup, 0),
            "batch_size": (self.optim.batch_size, 1), "accumulate": (self.optim.accumulate, 1),
            "steps": (self.steps, 1), "eval_every": (self.eval_every, 1),
            "val_episodes": (self.val_episodes, 1), "log_every": (self.log_every, 1),
            "threads": (self.threads, 0), "data_workers": (self.data_workers, 0),
            "prefetch": (self.prefetch, 1), "test_episodes": (self.test_episodes, 1),
            "test_repeats": (self.test_repeats, 1),
        }
        for name, (value, low) in at_least.items():
            if value < low:
                raise UserError(f"--{flag_name(name)} must be at least {low} (got {value})")
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
        options = self.network.core_options()  # the named flags the chosen layer takes
        if "n_beta" in options and options["n_beta"] not in (1, 4):
            raise UserError(f"--n-beta must be 1 or 4 (got {options['n_beta']})")
        from fwp.layers import check_layer_options

        check_layer_options(self.network.model, options)
        if self.optim.lr <= 0:
            raise UserError(f"--lr must be positive (got {self.optim.lr})")
        if self.optim.adam_eps <= 0:
            raise UserError(f"--adam-eps must be positive (got {self.optim.adam_eps})")
        if self.optim.grad_clip < 0:
            raise UserError(f"--grad-clip must be ≥ 0 (got {self.optim.grad_clip})")
        if self.optim.weight_decay < 0:
            raise UserError(f"--weight-decay must be ≥ 0 (got {self.optim.weight_decay})")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self.optim, name) < 1.0:
                raise UserError(f"--{flag_name(name)} must be in [0, 1) "
                                f"(got {getattr(self.optim, name)})")
        if self.optim.schedule == "noam" and self.optim.warmup < 1:
            raise UserError("the noam schedule needs --warmup ≥ 1")
        for name in ("dropout", "conv_dropout"):
            if not 0.0 <= getattr(self.network, name) < 1.0:
                raise UserError(f"--{flag_name(name)} must be in [0, 1)")
        if self.device != "auto" and not self.device.startswith(("cpu", "cuda")):
            raise UserError(f"unknown --device {self.device!r}; use auto, cpu, cuda or cuda:N")
        self._validate_protocol()

    def _validate_protocol(self) -> None:
        from fwp.data import DATASETS

        p = self.protocol
        if p.second_dataset and p.second_dataset not in DATASETS:
            raise UserError(f"unknown --second-dataset {p.second_dataset!r}; choose one of "
                            f"{', '.join(DATASETS)}")
        if p.second_dataset and p.protocol in ("episodic", "delayed"):
            raise UserError(f"--protocol {p.protocol} reads one data set; drop --second-dataset "
                            "(or use --protocol sequential / continual)")
        check_source(self.data.dataset, self.data.data_root, self.data.data_options, "")
        if p.second_dataset:
            check_source(p.second_dataset, p.second_data_root, p.second_data_options, "second-")
        for name in ("max_trim", "first_task_weight", "forget_weight"):
            if getattr(p, name) < 0:
                raise UserError(f"--{flag_name(name)} must be ≥ 0 (got {getattr(p, name)})")
        if self.network.short_conv < 0:
            raise UserError(f"--short-conv must be ≥ 0 (got {self.network.short_conv})")
        if self.network.short_conv and p.protocol not in ("delayed", "sequential"):
            raise UserError("--short-conv is for the delayed / sequential streams; set it to 0")
        if self.network.token_shift and p.protocol not in ("delayed", "sequential"):
            raise UserError("--token-shift is for the delayed / sequential streams; drop it")
        if p.protocol == "episodic":
            return
        if self.bootstrapped:
            raise UserError(f"--protocol {p.protocol} has no bootstrapped loss: set --beta2 0 "
                            "--beta3 0 (or use --protocol episodic)")
        if p.protocol != "continual" and p.max_trim >= self.data.n_way * self.data.k_shot:
            raise UserError(f"--max-trim {p.max_trim} would drop a whole segment of N·K = "
                            f"{self.data.n_way * self.data.k_shot} images; lower it")

    def unused(self) -> dict[str, str]:
        """Fields this run never reads, each with why (a flag given for one is refused)."""
        p, net = self.protocol.protocol, self.network
        out = {
            name: f"it is an option of --model {' / '.join(models)}, and --model is {net.model}"
            for name, (_, models) in NAMED_LAYER_OPTIONS.items() if net.model not in models
        }
        if p not in ("sequential", "continual"):
            out.update(dict.fromkeys(
                ("second_dataset", "second_data_root", "second_data_options"),
                f"--protocol {p} reads one data set (the second is for sequential / continual)"))
        elif not self.protocol.second_dataset:
            out.update(dict.fromkeys(
                ("second_data_root", "second_data_options"),
                "it describes --second-dataset, and none is given (the second task takes other "
                "classes of --dataset)"))
        if p not in ("delayed", "sequential"):
            out["max_trim"] = f"it trims the delayed / sequential streams, and --protocol is {p}"
        if p != "continual":
            out.update(dict.fromkeys(("first_task_weight", "forget_weight"),
                                     f"it weighs the continual loss, and --protocol is {p}"))
        if p in ("delayed", "sequential"):
            out["n_query"] = f"the {p} stream has no separate queries (every image is one)"
        if p != "episodic":
            why = f"it is for episodic runs, and --protocol is {p}"
            out.update(dict.fromkeys(("single_query", "separate_backbone_calls", "beta1",
                                      "test_repeats"), why))
        if not self.bootstrapped or p != "episodic":
            out["k_extra"] = "the K′ extra examples feed only the bootstrapped loss (--beta2 " \
                             "or --beta3 > 0, episodic)"
        if self.loss.beta2 == 0:
            out["distill"] = "D is the distillation term's, and --beta2 is 0"
        if self.optim.schedule == "constant":
            out["warmup"] = "--schedule constant has no warm-up"
        if not self.data_workers:
            out["prefetch"] = "it is how far the data workers work ahead, and --data-workers is 0"
        return out


def check_source(name: str, root: str, options: dict[str, Any], prefix: str) -> None:
    """A data set's root and loader options (``--{prefix}data-root``, ``--{prefix}data-option``)
    checked before anything is loaded. The first data set's root may still come later (a
    preset names the data set, the command line its folder); the second's may not."""
    from fwp.data import BUILT_IN, check_options

    if name in BUILT_IN and root:
        raise UserError(f"the {name} data set is built in and takes no --{prefix}data-root; "
                        "drop it")
    if prefix and name not in BUILT_IN and not root:
        raise UserError(f"data set '{name}' is read from your files; pass --{prefix}data-root "
                        "DIR pointing at them")
    check_options(name, options, f"--{prefix}data-option")


def from_dict(data: dict, where: str = "config") -> RunConfig:
    """A :class:`RunConfig` from a (possibly partial) nested dict; unknown keys are an error."""
    return core.from_dict(RunConfig, data, where)


def preset_names() -> list[str]:
    return core.preset_names(PRESETS_DIR)


def preset(name: str) -> dict:
    """The (partial) config dict of preset ``name`` (a file in ``fwp/fewshot/presets/``)."""
    return core.read_preset(PRESETS_DIR, name, RunConfig)


def read_file(path: str | Path) -> dict:
    """A partial config dict from a ``.toml`` / ``.json`` file, following ``base = "PRESET"``."""
    return core.read_file(path, PRESETS_DIR, RunConfig)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """``--preset``, ``--config`` and one ``--flag`` per leaf field (default: not given)."""
    parser.add_argument("--preset", metavar="NAME",
                        help=f"start from a preset: {', '.join(preset_names())}")
    parser.add_argument("--config", metavar="FILE",
                        help="a .toml or .json file with any fields of the run config")
    core.add_flags(parser, RunConfig)


def file_layers(args: argparse.Namespace) -> list[tuple[str, dict | None]]:
    """The ``--preset`` and ``--config`` layers given on the command line (None: absent)."""
    return [
        (f"--preset {args.preset}",
         preset(args.preset) if getattr(args, "preset", None) else None),
        (f"--config {args.config}",
         read_file(args.config) if getattr(args, "config", None) else None),
    ]


def config_from_args(args: argparse.Namespace, base: dict | None = None) -> RunConfig:
    """Defaults ← ``--preset`` ← ``--config`` ← flags given; validated.

    On resume (``base``: the run's saved config): defaults ← ``base`` ← flags given. A preset or
    config file typed again on resume does not reset the run's fields (the flags given when it
    started live only in its config); :func:`fwp.runs.policy.kept_over_files` lists where
    they differ.
    """
    from fwp.environment import warn_threads

    flags = ("the command line", core.given(args, RunConfig))
    layers = [("the saved config", base), flags] if base is not None else [*file_layers(args),
                                                                            flags]
    config = core.resolve(RunConfig, layers)
    config.validate()
    core.refuse_unused(config, flags[1])
    warn_threads(config.threads)
    return config
