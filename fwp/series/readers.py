"""Readers for the time-series files of the paper and the UEA archive, into one layout.

Every reader returns a :class:`SeriesSet`: ``values [N, T, C]`` (NaN where a value is missing),
each series padded after its end with its last value as the public code does (the models read
their output at index ``lengths − 1``), integer ``labels`` and the class names.

- ``.ts`` (the UEA/UCR archive's text format; sktime ships a few sets in its wheel) and the
  multivariate ``.arff`` of the same archive (the public EigenWorms code reads
  ``Multivariate_arff/EigenWorms/EigenWorms_{TRAIN,TEST}.arff``).
- Speech Commands v0.02 (public code: ``SpeechCommands/<word>/*.wav``, the ten words, clips of
  exactly 16,000 samples, 20 MFCCs with log-mels, n_fft 200, 64 mels → 161 × 20 per clip).
- PhysioNet 2019 sepsis (public code: a folder of ``*.psv`` files, 41 columns, one row per ICU
  hour): the first 72 hours by ICULOS, missing hours as NaN rows, the 34 time-varying columns,
  label = any SepsisLabel; records with ≤ 2 rows are left out as the public code does. The five
  static columns become constant channels (our choice: the public code feeds them to the
  initial state).
"""

from __future__ import annotations

import math
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fwp.errors import UserError

SPEECH_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


@dataclass
class SeriesSet:
    """Series of one data set: ``values [N, T, C]`` float32 (NaN = missing, padded with each
    series' last value), ``lengths [N]``, ``labels [N]`` (indices into ``classes``);
    ``keep [N, T]`` (optional) marks points that a drop of observations must spare."""

    values: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    keep: torch.Tensor | None = None

    @property
    def channels(self) -> int:
        return self.values.shape[-1]


def stack_series(series: list[np.ndarray], labels: list[str], where: str) -> SeriesSet:
    """Series ``[L_i, C]`` of unequal lengths → a padded :class:`SeriesSet`; classes in order of
    first appearance (sorted when they are all numbers)."""
    if not series:
        raise UserError(f"{where}: no series found")
    channels = {s.shape[1] for s in series}
    if len(channels) != 1:
        raise UserError(f"{where}: series have different numbers of channels {sorted(channels)}")
    for i, s in enumerate(series):
        if s.shape[0] == 0 or np.isnan(s).all():
            raise UserError(f"{where}: series {i} is empty (no observed value); remove it")
    T = max(s.shape[0] for s in series)
    values = np.stack([np.concatenate([s, np.repeat(s[-1:], T - len(s), axis=0)]) for s in series])
    classes = sorted(set(labels), key=_class_order(labels))
    index = {c: i for i, c in enumerate(classes)}
    return SeriesSet(torch.tensor(values, dtype=torch.float32),
                     torch.tensor([len(s) for s in series]),
                     torch.tensor([index[c] for c in labels]), classes)


def _class_order(labels: list[str]):
    try:
        [float(c) for c in labels]
        return float
    except ValueError:
        first = {c: i for i, c in reversed(list(enumerate(labels)))}
        return first.__getitem__


def concat(sets: list[SeriesSet]) -> list[tuple[np.ndarray, str]]:
    """The (series, label) pairs of several sets (e.g. a TRAIN and a TEST file), unpadded."""
    return [(s.values[i, : s.lengths[i]].numpy(), s.classes[s.labels[i]])
            for s in sets for i in range(len(s.labels))]


def _number(text: str, where: str) -> float:
    text = text.strip()
    if text in ("?", "NaN", "nan", ""):
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{where}: {text!r} is not a number") from None


def read_ts(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """Series ``[L, C]`` and labels of a ``.ts`` file (channels split by ``:``, values by ``,``,
    the label last; ``?`` is a missing value)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no .ts file at {path}")
    series, labels, in_data = [], [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        where = f"{path}:{number}"
        if not line or line.startswith("#"):
            continue
        if not in_data:
            key, _, value = line.partition(" ")
            if key.lower() == "@timestamps" and value.strip().lower() == "true":
                raise UserError(f"{where}: time-stamped .ts files are not supported; give the "
                                f"series on a regular grid with missing values as '?'")
            in_data = key.lower() == "@data"
            continue
        *channels, label = line.split(":")
        if not channels:
            raise UserError(f"{where}: a data line needs channels and a label split by ':'")
        columns = [[_number(v, where) for v in c.split(",")] for c in channels]
        if len({len(c) for c in columns}) != 1:
            raise UserError(f"{where}: channels of one series have different lengths")
        series.append(np.array(columns, dtype=np.float64).T)
        labels.append(label.strip())
    if not in_data:
        raise UserError(f"{path}: no @data line; is this a .ts file?")
    return series, labels


def read_arff(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """Series and labels of a multivariate (relational) ``.arff`` file of the UEA archive: each
    data line is ``'c1 values\\nc2 values…',label``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no .arff file at {path}")
    series, labels, in_data = [], [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        where = f"{path}:{number}"
        if not line or line.startswith("%"):
            continue
        if not in_data:
            in_data = line.lower().startswith("@data")
            continue
        body, _, label = line.rpartition(",")
        body = body.strip().strip("'\"")
        if not body:
            raise UserError(f"{where}: expected 'channel values…',label")
        columns = [[_number(v, where) for v in c.split(",")] for c in body.split("\\n")]
        if len({len(c) for c in columns}) != 1:
            raise UserError(f"{where}: channels of one series have different lengths")
        series.append(np.array(columns, dtype=np.float64).T)
        labels.append(label.strip().strip("'\""))
    if not in_data:
        raise UserError(f"{path}: no @data line; is this an .arff file?")
    return series, labels


def read_uea(root: Path, name: str) -> SeriesSet:
    """``root/NAME/NAME_{TRAIN,TEST}.ts`` (or ``.arff``), train and test merged as the public
    code does before its own split."""
    folder = Path(root) / name
    pairs: list[tuple[np.ndarray, str]] = []
    for part in ("TRAIN", "TEST"):
        ts, arff = folder / f"{name}_{part}.ts", folder / f"{name}_{part}.arff"
        if ts.is_file():
            series, labels = read_ts(ts)
        elif arff.is_file():
            series, labels = read_arff(arff)
        else:
            raise UserError(f"no {ts.name} or {arff.name} in {folder}; pass --data-root the "
                            f"folder that holds {name}/")
        pairs += list(zip(series, labels))
    return stack_series([s for s, _ in pairs], [c for _, c in pairs], str(folder))


def shipped_root() -> Path:
    """The folder of UEA sets inside the installed sktime package (never imported: only its
    data files are read)."""
    import importlib.util

    spec = importlib.util.find_spec("sktime")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the shipped UEA sets come with sktime: pip install -e \".[series]\"")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit mono PCM WAV file as floats in [−1, 1) (the public code divides by 2¹⁵)."""
    try:
        with wave.open(str(path)) as f:
            if f.getsampwidth() != 2 or f.getnchannels() != 1:
                raise UserError(f"{path}: expected 16-bit mono PCM audio")
            frames = f.readframes(f.getnframes())
    except (wave.Error, EOFError) as error:
        raise UserError(f"{path}: not a readable WAV file ({error})") from None
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 2**15


def mfcc(audio: torch.Tensor, sample_rate: int = 16000, n_mfcc: int = 20, n_fft: int = 200,
         n_mels: int = 64) -> torch.Tensor:
    """``[N, frames, n_mfcc]`` MFCCs of ``audio [N, samples]`` with the settings of the public
    code's torchaudio transform (``MFCC(log_mels=True, n_mfcc=20, melkwargs=dict(n_fft=200,
    n_mels=64))``): Hann window, hop n_fft/2, centred frames, power spectrum, HTK mel filters
    from 0 to Nyquist without normalisation, log(mel + 1e-6), orthonormal DCT-II."""
    spec = torch.stft(audio, n_fft, hop_length=n_fft // 2, window=torch.hann_window(n_fft),
                      center=True, pad_mode="reflect", return_complex=True).abs().square()
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel = 2595.0 * torch.log10(1.0 + freqs / 700.0)
    edges_mel = torch.linspace(0, float(mel[-1]), n_mels + 2)
    edges = 700.0 * (10 ** (edges_mel / 2595.0) - 1.0)
    rise = (freqs[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    fall = (edges[None, 2:] - freqs[:, None]) / (edges[2:] - edges[1:-1])
    filters = torch.clamp(torch.minimum(rise, fall), min=0.0)  # [freqs, mels]
    log_mel = torch.log(torch.einsum("nft,fm->ntm", spec, filters) + 1e-6)
    k = torch.arange(n_mels, dtype=torch.float32)
    dct = torch.cos(math.pi / n_mels * (k[None, :] + 0.5) * torch.arange(n_mfcc)[:, None])
    dct[0] *= 1 / math.sqrt(2.0)
    dct *= math.sqrt(2.0 / n_mels)
    return log_mel @ dct.T


def read_speech_commands(root: Path) -> SeriesSet:
    """The public code's Speech Commands task from ``root/<word>/*.wav`` (see module doc)."""
    root = Path(root)
    clips, labels = [], []
    for word in SPEECH_WORDS:
        folder = root / word
        if not folder.is_dir():
            raise UserError(f"no folder {folder}; Speech Commands needs the ten word folders "
                            f"{', '.join(SPEECH_WORDS)} under --data-root")
        for path in sorted(folder.glob("*.wav")):
            audio = read_wav(path)
            if len(audio) == 16000:  # the public code leaves shorter clips out
                clips.append(audio)
                labels.append(word)
    if not clips:
        raise UserError(f"no 16,000-sample WAV clip under {root}")
    features = mfcc(torch.tensor(np.stack(clips)))
    N, T, _ = features.shape
    index = {w: i for i, w in enumerate(SPEECH_WORDS)}
    return SeriesSet(features, torch.full((N,), T), torch.tensor([index[w] for w in labels]),
                     list(SPEECH_WORDS))


def read_psv(path: Path, hours: int = 72) -> tuple[np.ndarray, np.ndarray, float]:
    """One PhysioNet 2019 record: hourly values ``[L, 34]`` (NaN rows for missing hours),
    static ``[5]`` (age, gender, unit1, unit2, hospital admission time; NaN → 0), label."""
    lines = Path(path).read_text().splitlines()
    rows, static, label, previous = [], None, 0.0, 0
    for number, line in enumerate(lines[1:], 2):
        cells = line.split("|")
        if len(cells) != 41:
            raise UserError(f"{path}:{number}: expected 41 '|'-separated columns, got "
                            f"{len(cells)}")
        values = [_number(c, f"{path}:{number}") for c in cells]
        hour = int(values[39])
        if hour <= previous:
            raise UserError(f"{path}:{number}: ICULOS {hour} does not increase; the rows must "
                            f"be in time order, one per hour")
        if hour > hours:
            break
        rows += [[math.nan] * 34] * (hour - previous - 1) + [values[:34]]
        previous, static = hour, values[34:39]
        label = max(label, values[40])
    static_values = np.nan_to_num(np.array(static or [math.nan] * 5, dtype=np.float64))
    return np.array(rows, dtype=np.float64).reshape(-1, 34), static_values, label


def read_sepsis(root: Path) -> SeriesSet:
    """PhysioNet 2019 sepsis prediction from ``root/*.psv`` (see module doc)."""
    paths = sorted(Path(root).glob("*.psv"))
    if not paths:
        raise UserError(f"no .psv file in {root}; pass --data-root the folder of the "
                        f"PhysioNet 2019 records")
    series, labels = [], []
    for path in paths:
        rows, static, label = read_psv(path)
        if len(rows) > 2:
            series.append(np.concatenate([rows, np.repeat(static[None], len(rows), 0)], 1))
            labels.append(str(int(label)))
    return stack_series(series, labels, str(root))
