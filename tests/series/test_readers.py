"""Readers of the paper's and the UEA archive's files, on tiny files the tests write."""

import math
import wave

import numpy as np
import pytest
import torch

from fwp.errors import UserError
from fwp.series.readers import (
    SPEECH_WORDS,
    mfcc,
    read_arff,
    read_sepsis,
    read_speech_commands,
    read_ts,
    read_uea,
    shipped_root,
)

TS = """# a comment
@problemName Tiny
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true a b
@data
1,2,3:4,5,6:a
7,?:8,9:b
"""


def test_ts_reads_unequal_lengths_and_missing_values(tmp_path):
    (tmp_path / "x.ts").write_text(TS)
    series, labels = read_ts(tmp_path / "x.ts")
    assert labels == ["a", "b"]
    np.testing.assert_array_equal(series[0], [[1, 4], [2, 5], [3, 6]])
    assert series[1].shape == (2, 2) and math.isnan(series[1][1, 0])


def test_ts_refusals_name_the_line(tmp_path):
    path = tmp_path / "x.ts"
    path.write_text(TS.replace("@timeStamps false", "@timeStamps true"))
    with pytest.raises(UserError, match="time-stamped"):
        read_ts(path)
    path.write_text(TS + "1,2:3:a\n")
    with pytest.raises(UserError, match=r"x.ts:12: channels of one series have different"):
        read_ts(path)
    path.write_text(TS + "1,x:3,4:a\n")
    with pytest.raises(UserError, match="'x' is not a number"):
        read_ts(path)
    with pytest.raises(UserError, match="no .ts file"):
        read_ts(tmp_path / "missing.ts")


def test_uea_folder_merges_train_and_test_pads_and_refuses_empty_series(tmp_path):
    folder = tmp_path / "Tiny"
    folder.mkdir()
    (folder / "Tiny_TRAIN.ts").write_text(TS)
    (folder / "Tiny_TEST.arff").write_text(
        "@relation Tiny\n@attribute x relational\n@end x\n@attribute target {a,b}\n@data\n"
        "'1,2,3,4\\n5,6,7,8',b\n")
    data = read_uea(tmp_path, "Tiny")
    assert data.values.shape == (3, 4, 2) and data.lengths.tolist() == [3, 2, 4]
    assert data.classes == ["a", "b"] and data.labels.tolist() == [0, 1, 1]
    torch.testing.assert_close(data.values[0, 3], torch.tensor([3.0, 6.0]))  # padded: last value
    (folder / "Tiny_TRAIN.ts").write_text(TS + "?,?:?,?:a\n")
    with pytest.raises(UserError, match="series 2 is empty"):
        read_uea(tmp_path, "Tiny")


def test_arff_reads_the_multivariate_layout(tmp_path):
    (tmp_path / "x.arff").write_text("% c\n@relation r\n@data\n'1,2\\n3,?','1'\n")
    series, labels = read_arff(tmp_path / "x.arff")
    assert labels == ["1"] and series[0].shape == (2, 2) and math.isnan(series[0][1, 1])


def _wav(path, samples):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes((samples * 2**15).astype("<i2").tobytes())


def test_speech_commands_reads_full_clips_into_161_by_20_mfccs(tmp_path):
    rng = np.random.default_rng(0)
    for word in SPEECH_WORDS:
        (tmp_path / word).mkdir()
        _wav(tmp_path / word / "a.wav", 0.1 * rng.standard_normal(16000))
    _wav(tmp_path / "yes" / "short.wav", 0.1 * rng.standard_normal(8000))
    data = read_speech_commands(tmp_path)
    assert data.values.shape == (10, 161, 20) and torch.isfinite(data.values).all()
    assert data.classes == list(SPEECH_WORDS) and data.labels.tolist() == list(range(10))
    with pytest.raises(UserError, match="ten word folders"):
        read_speech_commands(tmp_path / "yes")


def test_mfcc_of_a_tone_peaks_in_its_mel_band_and_dct_is_orthonormal():
    t = torch.arange(16000) / 16000
    low, high = (mfcc(torch.sin(2 * math.pi * f * t)[None]) for f in (300.0, 5000.0))
    assert low.shape == (1, 161, 20)
    assert not torch.allclose(low, high)
    silence = mfcc(torch.zeros(1, 16000))
    # log(1e-6) in every mel band: only the DC coefficient is non-zero, √64·log(1e-6)
    torch.testing.assert_close(silence[0, 0, 0], torch.tensor(8.0 * math.log(1e-6)))
    torch.testing.assert_close(silence[0, 0, 1:], torch.zeros(19), atol=1e-3, rtol=0)


PSV_HEADER = "|".join(f"c{i}" for i in range(41))


def _psv(path, rows):
    lines = [PSV_HEADER]
    for hour, label in rows:
        values = [str(hour)] * 34 + ["60", "1", "1", "NaN", "-5", str(hour), str(label)]
        lines.append("|".join(values))
    path.write_text("\n".join(lines) + "\n")


def test_sepsis_records_fill_missing_hours_cut_at_72_and_take_any_label(tmp_path):
    _psv(tmp_path / "p1.psv", [(1, 0), (2, 0), (5, 1), (73, 1)])
    _psv(tmp_path / "p2.psv", [(1, 0), (2, 0), (3, 0)])
    _psv(tmp_path / "p3.psv", [(1, 0), (2, 0)])  # ≤ 2 rows: left out as the public code does
    data = read_sepsis(tmp_path)
    assert data.values.shape == (2, 5, 39) and data.lengths.tolist() == [5, 3]
    assert data.classes == ["0", "1"] and data.labels.tolist() == [1, 0]
    assert torch.isnan(data.values[0, 2, :34]).all() and data.values[0, 4, 0] == 5.0
    torch.testing.assert_close(data.values[0, 0, 34:], torch.tensor([60.0, 1, 1, 0, -5]))
    _psv(tmp_path / "p4.psv", [(2, 0), (1, 0), (3, 0)])
    with pytest.raises(UserError, match="ICULOS 1 does not increase"):
        read_sepsis(tmp_path)


def test_shipped_sets_are_found_in_the_sktime_wheel():
    pytest.importorskip("sktime")  # only its data files are read
    data = read_uea(shipped_root(), "JapaneseVowels")
    assert data.values.shape == (640, 29, 12) and len(data.classes) == 9
    assert int(data.lengths.min()) == 7
