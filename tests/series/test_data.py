"""The paper's preparation of series, the cue_recall task, and the GRU-Δt / classifier."""

import math

import pytest
import torch

from fwp.errors import UserError
from fwp.series.data import (
    cue_recall,
    drop_points,
    fill,
    increments,
    load,
    prepare,
    stratified_split,
)
from fwp.series.model import GRUDeltaT, SeriesClassifier
from fwp.series.readers import SeriesSet

pytest.importorskip("torchcde")


def test_split_is_stratified_disjoint_and_seeded():
    labels = torch.arange(60) % 3
    splits = stratified_split(labels, seed=4)
    assert [len(splits[k]) for k in ("train", "valid", "test")] == [42, 9, 9]
    assert len(torch.cat(list(splits.values())).unique()) == 60
    assert (labels[splits["test"]].bincount() == 3).all()
    assert torch.equal(stratified_split(labels, 4)["test"], splits["test"])
    assert not torch.equal(stratified_split(labels, 5)["test"], splits["test"])


def test_drop_removes_the_same_number_of_whole_time_points_per_series():
    values = torch.randn(5, 10, 3)
    dropped = drop_points(values, 0.3, seed=0)
    missing = torch.isnan(dropped)
    assert (missing.all(-1) == missing.any(-1)).all()  # whole time points
    assert (missing.all(-1).sum(1) == 3).all()
    with pytest.raises(UserError, match=r"drop must be in \[0, 1\)"):
        drop_points(values, 1.0, 0)


def test_fill_linear_and_hold():
    x = torch.tensor([[[math.nan], [1.0], [math.nan], [3.0], [math.nan]]])
    torch.testing.assert_close(fill(x, "linear")[0, :, 0], torch.tensor([1.0, 1, 2, 3, 3]))
    torch.testing.assert_close(fill(x, "hold")[0, :, 0], torch.tensor([1.0, 1, 1, 3, 3]))
    never = torch.full((1, 3, 1), math.nan)
    assert (fill(never, "linear") == 0).all() and (fill(never, "hold") == 0).all()


def test_prepare_normalises_with_training_values_and_adds_time():
    data = SeriesSet(torch.randn(20, 6, 2) * 5 + 3, torch.full((20,), 6), torch.arange(20) % 2,
                     ["a", "b"])
    prepared = prepare(data, drop=0.5, fill_with="linear", seed=1)
    assert prepared.values.shape == (20, 6, 3) and torch.isfinite(prepared.values).all()
    torch.testing.assert_close(prepared.values[0, :, 0], torch.linspace(0, 1, 6))
    assert (prepared.observed.sum(1) == 3).all()
    train = prepared.values[prepared.splits["train"]][..., 1:]
    observed = prepared.observed[prepared.splits["train"]]
    assert train[observed].mean(0).abs().max() < 1e-5


def test_cue_recall_keeps_its_cue_when_points_are_dropped():
    data = cue_recall(series=16, length=12, classes=2)
    prepared = prepare(data, drop=0.7, fill_with="hold", seed=0)
    assert (prepared.observed & data.keep).sum() == 16
    with pytest.raises(UserError, match="cue_recall needs"):
        cue_recall(series=2, length=12, classes=2)


def test_increments_are_depth_one_log_signature_pieces():
    data = SeriesSet(torch.arange(9.0).reshape(1, 9, 1) ** 2, torch.tensor([9]),
                     torch.tensor([0]), ["a"])
    pieces = increments(data, 4)
    torch.testing.assert_close(pieces.values[0, :, 0], torch.tensor([16.0 - 0, 64 - 16]))
    assert pieces.lengths.tolist() == [2]


def test_data_options_and_roots_that_do_not_apply_are_refused(tmp_path):
    with pytest.raises(UserError, match="do not apply to 'japanese_vowels'"):
        load("japanese_vowels", None, {"window": 4})
    with pytest.raises(UserError, match="--data-root does not apply"):
        load("cue_recall", str(tmp_path), {})
    with pytest.raises(UserError, match="pass --data-root"):
        load("speech_commands", None, {})
    with pytest.raises(UserError, match="name=CharacterTrajectories"):
        load("uea", str(tmp_path), {})


def test_gru_dt_updates_only_at_observed_points_with_the_time_gap():
    torch.manual_seed(0)
    gru = GRUDeltaT(3, 8).double()
    values = torch.randn(2, 5, 3, dtype=torch.float64)
    values[..., 0] = torch.arange(5.0)
    observed = torch.tensor([[True, False, False, True, True], [True] * 5])
    h = gru(values, observed)
    torch.testing.assert_close(h[0, 1], h[0, 0])
    torch.testing.assert_close(h[0, 2], h[0, 0])
    gap = torch.cat([values[0, 3, :1] - values[0, 0, :1], values[0, 3, 1:]])
    torch.testing.assert_close(h[0, 3], gru.cell(gap[None], h[0, :1])[0])


@pytest.mark.parametrize("model", ["deltanet", "ct_delta", "gru_dt"])
def test_classifier_reads_each_series_at_its_last_point(model):
    torch.manual_seed(0)
    net = SeriesClassifier(3, 4, model, 1, 8, 2, 16).double().eval()
    values = torch.randn(2, 7, 3, dtype=torch.float64)
    observed = torch.ones(2, 7, dtype=torch.bool)
    lengths = torch.tensor([4, 7])
    later = values.clone()
    later[0, 4:] += 5.0
    torch.testing.assert_close(net(later, observed, lengths)[0], net(values, observed, lengths)[0])
    with pytest.raises(UserError, match="unknown model"):
        SeriesClassifier(3, 4, "mamba", 1, 8, 2, 16)
