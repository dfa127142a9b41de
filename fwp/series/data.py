"""The data sets of ``fwp series`` and the paper's preparation of them.

Preparation, as the public code (after Kidger et al., 2020) does it:

1. train and test files merged, then a stratified 70 / 15 / 15 % train / validation / test split
   (seeded by ``data_seed``; the public code uses scikit-learn's, so the members differ);
2. ``drop`` (e.g. 0.3): in every series the same number ⌊T·drop⌋ of random time points
   (all channels) become missing, T the padded length, as the public UEA code;
3. every channel normalised by the mean and std of its observed training values;
4. observation time as channel 0 (t / (T − 1), our scaling: the public code feeds t as is);
5. missing values filled by interpolation along time (``linear``; ``hold`` carries the last
   observation forward, the first one backward), what the paper's spline does between
   observations; a channel never observed in a series becomes 0, its training mean.

``observed [N, T]`` marks the time points that had a value (the GRU-Δt baseline reads it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fwp.errors import UserError
from fwp.series.readers import (
    SeriesSet,
    read_sepsis,
    read_speech_commands,
    read_uea,
    shipped_root,
)

SHIPPED = {"japanese_vowels": "JapaneseVowels", "basic_motions": "BasicMotions"}
ON_DISK = ("uea", "eigenworms", "speech_commands", "physionet_sepsis")
DATASETS = (*SHIPPED, *ON_DISK, "cue_recall")


@dataclass
class Prepared:
    """A prepared data set: ``values [N, T, C]`` filled, channel 0 = time; ``observed [N, T]``;
    ``lengths``, ``labels``; index tensors of the three splits; ``classes``."""

    values: torch.Tensor
    observed: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    splits: dict[str, torch.Tensor]
    classes: list[str]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.values[index], self.observed[index], self.lengths[index],
                self.labels[index])


def load(dataset: str, root: str | None, options: dict[str, Any]) -> SeriesSet:
    """The raw :class:`SeriesSet` of ``dataset`` (``root``: where the user's files are)."""
    allowed = {"uea": {"name"}, "eigenworms": {"window"}, "cue_recall": set(CUE_DEFAULTS)}
    unknown = set(options) - allowed.get(dataset, set())
    if unknown:
        raise UserError(f"data options {sorted(unknown)} do not apply to {dataset!r} "
                        f"(it takes {sorted(allowed.get(dataset, set())) or 'none'})")
    if dataset in SHIPPED:
        if root is not None:
            raise UserError(f"{dataset} ships with the series extra; --data-root does not apply")
        return read_uea(shipped_root(), SHIPPED[dataset])
    if dataset == "cue_recall":
        if root is not None:
            raise UserError("cue_recall is built in; --data-root does not apply")
        return cue_recall(**options)
    if dataset not in ON_DISK:
        raise UserError(f"unknown data set {dataset!r}; choose one of {DATASETS}")
    if root is None:
        raise UserError(f"{dataset} is read from your files: pass --data-root")
    if dataset == "uea":
        if "name" not in options:
            raise UserError("uea needs the set's name: --data-option name=CharacterTrajectories")
        return read_uea(Path(root), str(options["name"]))
    if dataset == "eigenworms":
        return increments(read_uea(Path(root), "EigenWorms"), int(options.get("window", 1)))
    if dataset == "speech_commands":
        return read_speech_commands(Path(root))
    return read_sepsis(Path(root))


def increments(data: SeriesSet, window: int) -> SeriesSet:
    """Each series replaced by its increments over windows of ``window`` points: the depth-1
    log-signature pieces that the public EigenWorms runs feed their ODE (step 4); 1: as is."""
    if window < 1:
        raise UserError(f"window must be at least 1 (got {window})")
    if window == 1:
        return data
    ends = torch.arange(0, data.values.shape[1], window)
    ends = torch.cat([ends, torch.tensor([data.values.shape[1] - 1])]).unique()
    x = data.values[:, ends]
    lengths = (data.lengths - 1 + window - 1) // window
    return SeriesSet(x[:, 1:] - x[:, :-1], lengths.clamp(min=1), data.labels, data.classes)


CUE_DEFAULTS = {"series": 600, "length": 60, "classes": 4, "noise": 0.3, "data_seed": 7}


def cue_recall(**options: Any) -> SeriesSet:
    """A built-in irregular task that needs memory across gaps: ``classes`` channels of noise;
    at one random time in the first quarter channel c (the class) carries a pulse of height 3;
    the class is asked at the end of the series. ``fwp series`` then drops points at random
    (the cue point never: ``observed`` keeps it), so the pulse must be held over long, uneven
    gaps."""
    o = {**CUE_DEFAULTS, **options}
    n, T, C = int(o["series"]), int(o["length"]), int(o["classes"])
    if n < 2 * C or T < 8 or C < 2:
        raise UserError("cue_recall needs series ≥ 2·classes, length ≥ 8 and classes ≥ 2")
    g = torch.Generator().manual_seed(int(o["data_seed"]))
    values = float(o["noise"]) * torch.randn(n, T, C, generator=g)
    labels = torch.arange(n) % C
    cue = torch.randint(0, T // 4, (n,), generator=g)
    values[torch.arange(n), cue, labels] += 3.0
    keep = torch.zeros(n, T, dtype=torch.bool)
    keep[torch.arange(n), cue] = True
    return SeriesSet(values, torch.full((n,), T), labels, [f"cue{c}" for c in range(C)], keep)


def stratified_split(labels: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """70 / 15 / 15 % of every class, shuffled with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    parts: dict[str, list[torch.Tensor]] = {"train": [], "valid": [], "test": []}
    for c in labels.unique():
        members = (labels == c).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=g)]
        n_train = round(0.7 * len(members))
        n_valid = (len(members) - n_train) // 2
        for name, part in zip(parts, members.split([n_train, n_valid,
                                                    len(members) - n_train - n_valid])):
            parts[name].append(part)
    out = {name: torch.cat(p).sort().values for name, p in parts.items()}
    if any(len(p) == 0 for p in out.values()):
        raise UserError(f"too few series ({len(labels)}) for a train / validation / test split")
    return out


def drop_points(values: torch.Tensor, rate: float, seed: int) -> torch.Tensor:
    """``values`` with ⌊T·rate⌋ random time points of every series set to NaN."""
    if not 0.0 <= rate < 1.0:
        raise UserError(f"drop must be in [0, 1) (got {rate})")
    values = values.clone()
    g = torch.Generator().manual_seed(seed)
    N, T, _ = values.shape
    count = int(T * rate)
    for i in range(N):
        values[i, torch.randperm(T, generator=g)[:count]] = math.nan
    return values


def fill(values: torch.Tensor, how: str) -> torch.Tensor:
    """NaNs replaced along time: ``linear`` (torchcde's linear interpolation coefficients, which
    hold the first/last observation outside them) or ``hold`` (last observation carried
    forward, the first backward); a channel with no observation → 0."""
    if how == "hold":
        x = values.clone()
        for t in range(1, x.shape[1]):
            x[:, t] = torch.where(torch.isnan(x[:, t]), x[:, t - 1], x[:, t])
        for t in range(x.shape[1] - 2, -1, -1):
            x[:, t] = torch.where(torch.isnan(x[:, t]), x[:, t + 1], x[:, t])
    else:
        import torchcde

        times = torch.arange(values.shape[1], dtype=values.dtype)
        x = torchcde.linear_interpolation_coeffs(values, t=times)
    return torch.nan_to_num(x, nan=0.0)


def prepare(data: SeriesSet, drop: float, fill_with: str, seed: int) -> Prepared:
    """Steps 1–5 of the module doc (``data.keep`` marks points never dropped)."""
    splits = stratified_split(data.labels, seed)
    values = drop_points(data.values, drop, seed + 1)
    if data.keep is not None:
        values = torch.where(data.keep[..., None], data.values, values)
    train = values[splits["train"]].flatten(0, 1)
    mean = torch.nanmean(train, dim=0)
    std = torch.from_numpy(np.nanstd(train.numpy(), axis=0, ddof=1))
    values = (values - torch.nan_to_num(mean)) / (torch.nan_to_num(std) + 1e-5)
    observed = ~torch.isnan(values).all(-1)
    T = values.shape[1]
    time = (torch.arange(T, dtype=values.dtype) / max(T - 1, 1)).expand(len(values), T)
    values = torch.cat([time[..., None], fill(values, fill_with)], dim=-1)
    return Prepared(values, observed, data.lengths, data.labels, splits, data.classes)
