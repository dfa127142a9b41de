"""Typed configuration of a time-series classification run (``fwp series train``).

Every field is a flag (underscores → dashes) over a file (``--config FILE.toml|json``) over the
defaults below, on the configuration core :mod:`fwp.config`. The defaults are sized for a CPU:
a one-block model of width 32 on JapaneseVowels, 30 epochs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from fwp import config as core
from fwp.config import check_choices, flag_name, option
from fwp.errors import UserError

INTERPOLATIONS = ("linear", "hold", "cubic")
PATH_LAYERS = ("ct_hebb", "ct_oja", "ct_delta", "ncde")  # layers that take ``interpolation``


@dataclass
class RunConfig:
    """One run: a data set with a fraction of its points dropped, a model, how to train it.

    The data are prepared as :mod:`fwp.series.data` says (the paper's pipeline); the model is
    :class:`fwp.series.model.SeriesClassifier`. Adam, cross-entropy, ``epochs`` passes over the
    training split; the model kept is the one of best validation accuracy (ties: lower
    validation loss), as the public code keeps its best validation model; it is tested once at
    the end.
    """

    dataset: str = option("japanese_vowels", "data set", choices="fwp.series.data:DATASETS")
    data_root: str = option("", "folder with your files (uea, eigenworms, speech_commands, "
                            "physionet_sepsis); \"\" for the shipped and built-in sets")
    data_options: dict[str, Any] = option(
        {}, "an option of the data set: name=SET (uea), window=4 (eigenworms), series=, length=, "
        "classes=, noise= (cue_recall)", flag="data-option")
    drop: float = option(0.0, "fraction of the time points dropped from every series (the "
                         "paper's irregular setting: 0.3, 0.5, 0.7)")
    interpolation: str = option(
        "linear", "how missing points are filled and, for ct_* and ncde, the layer's path: "
        "linear, hold (last observation), cubic (natural spline; fill is linear)",
        choices=INTERPOLATIONS)
    data_seed: int = option(0, "seeds the split and the dropped points (the same for every "
                            "model)")
    model: str = option("ct_delta", "a registered layer (ct_hebb, ct_oja, ct_delta, ncde, "
                        "deltanet, …) or gru_dt", choices="fwp.series.model:MODEL_NAMES")
    layers: int = option(1, "blocks of [layer, feed-forward]")
    d_model: int = option(32, "width of the blocks (GRU-Δt: its hidden size)")
    heads: int = option(4, "heads of the layer")
    d_ff: int = option(64, "inner size of the feed-forward blocks")
    dropout: float = option(0.0, "dropout in the blocks")
    options: dict[str, Any] = option(
        {}, "a keyword option of the layer class, e.g. method=dopri5, substeps=2, adjoint=true, "
        "drive=dx, post_tanh=true", flag="layer-option", aliases=("options",))
    seed: int = option(1, "seeds initialisation and the order of training series")
    epochs: int = option(30, "passes over the training split", resume="announce")
    batch_size: int = option(32, "series per step")
    lr: float = option(1e-3, "Adam's learning rate (the public UEA setting: 1e-3 at batch 32)")
    grad_clip: float = option(0.0, "max gradient norm (0: none, as the public code)")
    eval_every: int = option(1, "epochs between validations (and checkpoints)",
                             resume="runtime")
    threads: int = option(0, "torch CPU threads (0: leave torch's default)", resume="runtime")

    def layer_options(self) -> dict[str, Any]:
        """The layer's options: ``options`` plus the path's ``interpolation`` for the layers
        that read a path (unless given there)."""
        extra = {"interpolation": self.interpolation} if self.model in PATH_LAYERS else {}
        return {**extra, **self.options}

    def validate(self) -> None:
        check_choices(self)
        positive = {"layers": self.layers, "d_model": self.d_model, "heads": self.heads,
                    "d_ff": self.d_ff, "epochs": self.epochs, "batch_size": self.batch_size,
                    "eval_every": self.eval_every}
        for name, value in positive.items():
            if value < 1:
                raise UserError(f"--{flag_name(name)} must be at least 1 (got {value})")
        if not 0.0 <= self.drop < 1.0:
            raise UserError(f"--drop must be in [0, 1) (got {self.drop})")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive (got {self.lr})")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"--dropout must be in [0, 1) (got {self.dropout})")
        if self.interpolation == "cubic" and self.model not in PATH_LAYERS:
            raise UserError(f"--interpolation cubic is the path of {PATH_LAYERS}; {self.model} "
                            f"reads the filled points: use linear or hold")


def from_dict(data: dict, where: str = "config") -> RunConfig:
    return core.from_dict(RunConfig, data, where)


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    parser.add_argument("--config", metavar="FILE.toml",
                        help="file with any fields of the run config (.toml or .json)")
    core.add_flags(parser, RunConfig, skip)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults ← ``--config`` file ← flags given; validated."""
    path = getattr(args, "config", None)
    config = core.resolve(RunConfig, [
        (str(path), core.read_file(path) if path else None),
        ("the command line", core.given(args, RunConfig)),
    ])
    config.validate()
    return config
