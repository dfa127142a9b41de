"""Training batches assembled by data workers (``--data-workers``): the same run as without
them, resumed exactly, and the workers ended on a stop, a signal or an error."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fwp.data import EpisodeSampler, Prefetcher
from fwp.errors import UserError
from fwp.fewshot.checkpoint import CHECKPOINT, load_checkpoint
from fwp.fewshot.evaluate import load_split
from fwp.fewshot.protocols import episodic as train_module
from fwp.fewshot.train import TrainingDiverged, train

from .conftest import tiny_config


def _same_checkpoints(a: Path, b: Path) -> None:
    first, second = load_checkpoint(a / CHECKPOINT), load_checkpoint(b / CHECKPOINT)
    for key in first["model"]:
        assert torch.equal(first["model"][key], second["model"][key]), key
    assert first["sampler"] == second["sampler"] and first["best"] == second["best"]
    assert first["step"] == second["step"]


def test_workers_train_the_run_of_the_training_process(tiny_root, tmp_path, capsys):
    """Bootstrapped, with dropout and two micro-batches per step: 4 steps with the batches made
    in the training process, or made by 2 workers, stopped after 2 and resumed with 2 workers —
    bit-equal parameters, episode counter and validations."""
    changes = dict(beta2=2.0, beta3=1.0, dropout=0.1, accumulate=2, steps=4, eval_every=2)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(tiny_config(tiny_root, **changes), whole, progress=False)
    with_workers = tiny_config(tiny_root, data_workers=2, prefetch=1, **changes)
    assert train(with_workers, parts, stop_after=2, progress=False)["status"] == "stopped"
    assert multiprocessing.active_children() == []  # ended when the run stopped
    train(with_workers, parts, resume=True, progress=False)
    _same_checkpoints(whole, parts)
    assert load_checkpoint(parts / CHECKPOINT)["sampler"]["next_episode"] == 4 * 2 * 4


def test_a_stream_protocol_with_workers(tiny_root, tmp_path):
    for run, workers in (("a", 0), ("b", 2)):
        config = tiny_config(tiny_root, steps=2, eval_every=2, data_workers=workers)
        config.protocol.protocol = "delayed"
        config.validate()
        train(config, tmp_path / run, progress=False)
    _same_checkpoints(tmp_path / "a", tmp_path / "b")


def test_prefetcher_follows_a_rank_of_the_episode_stream(tiny_root):
    """Rank 1 of 2 from episode 6, batches of 3: episodes 9–11, 15–17, ...; starting the workers
    leaves the global RNG as it was; a batch asked out of turn is an error."""
    sampler = EpisodeSampler(load_split(tiny_config(tiny_root), "train"), 3, 2, seed=5)
    rng = torch.get_rng_state()
    prefetcher = Prefetcher(sampler, 3, start=9, stride=6, workers=2, prefetch=1,
                            pin_memory=False)
    try:
        assert torch.equal(torch.get_rng_state(), rng)
        for first in (9, 15, 21):
            batch, expected = prefetcher.next(first), sampler.batch(range(first, first + 3))
            assert batch.index.tolist() == [first, first + 1, first + 2]
            assert torch.equal(batch.support_images, expected.support_images)
            assert torch.equal(batch.query_labels, expected.query_labels)
        with pytest.raises(RuntimeError, match="at episode 27, not 30"):
            prefetcher.next(30)
    finally:
        prefetcher.close()
    assert multiprocessing.active_children() == []


def test_an_error_in_training_ends_the_workers(tiny_root, tmp_path, monkeypatch):
    real, calls = train_module.bootstrap_loss, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss, parts = real(*args, **kwargs)
        return (loss * float("nan") if len(calls) == 2 else loss), parts

    monkeypatch.setattr(train_module, "bootstrap_loss", poisoned)
    with pytest.raises(TrainingDiverged) as caught:
        train(tiny_config(tiny_root, data_workers=2), tmp_path / "run", progress=False)
    # The traceback keeps the training object alive: only an explicit close ends its workers.
    assert caught.traceback and multiprocessing.active_children() == []


def test_prefetch_needs_workers(tiny_root):
    from fwp.fewshot.config import config_from_args

    from .test_cli import parse

    with pytest.raises(UserError, match="--prefetch.*--data-workers is 0"):
        config_from_args(parse("train", "--preset", "demo", "--prefetch", "4", "--out", "x"))
    with pytest.raises(UserError, match="--data-workers must be at least 0"):
        tiny_config(tiny_root, data_workers=-1)


SIGNALLED_RUN = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from tests.fewshot.conftest import tiny_config
from fwp.fewshot.train import train
summary = train(tiny_config(Path(sys.argv[1]), steps=100000, eval_every=100000,
                            data_workers=2), Path(sys.argv[2]))
print("status", summary["status"], flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_process_group_stops_and_saves(tiny_root, tmp_path, private_cache,
                                                       signum):
    """Ctrl-C in a terminal (SIGINT) or a scheduler's SIGTERM reaches the training process and
    its workers: the step in progress finishes, the checkpoint is saved, and no process of the
    group is left."""
    repo = str(Path(__file__).parents[2])
    env = {**os.environ, "PYTHONPATH": repo, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-c", SIGNALLED_RUN, str(tiny_root), str(run), repo], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").is_file() or "train" not in (
                run / "metrics.jsonl").read_text():
            assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
            time.sleep(0.2)
        os.killpg(process.pid, signum)
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0 and "status interrupted" in out, out
    assert load_checkpoint(run / CHECKPOINT)["step"] >= 1
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # the workers are gone too
