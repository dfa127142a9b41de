"""The generic loop on a toy workflow that is not episodic: a regression on a data stream whose
position (and a carried state) must survive a resume."""

from __future__ import annotations

import json
import os
import re
import signal
from dataclasses import dataclass

import pytest
import torch

from fwp.config import option, to_dict
from fwp.errors import UserError
from fwp.runs import RunFolder, Training, TrainingDiverged, fit, load_checkpoint


@dataclass
class ToyConfig:
    seed: int = option(0, "seed")
    width: int = option(3, "input width")
    lr: float = option(0.05, "learning rate", resume="announce")
    steps: int = option(8, "steps", resume="announce")
    threads: int = option(1, "threads", resume="runtime")


class Toy(Training):
    """y = w·x on a stream of batches drawn from a generator whose position is saved; the
    carried ``state`` (a running mean of the inputs) stands for an LM's state across segments."""

    score, higher_is_better = "error", False

    def __init__(self, config: ToyConfig, blow_up_at: int | None = None,
                 signal_at: int | None = None) -> None:
        torch.manual_seed(config.seed)
        self.config = config
        self.model = torch.nn.Linear(config.width, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr)
        self.position, self.state = 0, torch.zeros(config.width)
        self.blow_up_at, self.signal_at = blow_up_at, signal_at

    def batch(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(1000 + position)
        x = torch.randn(8, self.config.width, generator=g)
        return x, x.sum(-1, keepdim=True)

    def train_step(self) -> dict[str, float]:
        x, y = self.batch(self.position)
        self.position += 1
        self.state = 0.9 * self.state + 0.1 * x.mean(0)
        noise = torch.randn(()) * 1e-3  # draws from torch's global generator
        loss = ((self.model(x + self.state) - y) ** 2).mean() + noise
        if self.step + 1 == self.blow_up_at:
            loss = loss * float("nan")
        if self.step + 1 == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "lr": self.optimizer.param_groups[0]["lr"]}

    def validate(self) -> dict[str, float]:
        with torch.no_grad():
            x, y = self.batch(-1)
            return {"error": float(((self.model(x) - y) ** 2).mean())}

    def state_dict(self) -> dict:
        return {"position": self.position, "carried": self.state}

    def load_state_dict(self, checkpoint: dict) -> None:
        self.position, self.state = checkpoint["position"], checkpoint["carried"]


def _fit(config, folder, **kwargs):
    training = kwargs.pop("training", None) or Toy(config)
    run = RunFolder(folder)
    with run.locked():
        return training, fit(training, run, steps=config.steps, eval_every=2, log_every=1,
                             progress=False, tensorboard=False, say=lambda _: None, **kwargs)


def _rows(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_resume_equals_uninterrupted_and_logs_each_step_once(tmp_path):
    config = ToyConfig()
    straight, _ = _fit(config, tmp_path / "a")
    _, first = _fit(config, tmp_path / "b", stop_after=3)
    assert first["status"] == "stopped" and first["step"] == 3
    resumed, last = _fit(config, tmp_path / "b")
    assert last["status"] == "finished" and resumed.position == 8
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert torch.equal(straight.state, resumed.state)
    steps = [(r["step"], r["split"]) for r in _rows(tmp_path / "b") if r["split"] == "train"]
    assert steps == [(s, "train") for s in range(1, 9)]
    assert load_checkpoint(tmp_path / "b" / "best.pt")["best"]["step"] in (2, 4, 6, 8)


def test_resume_policy_refuses_a_model_change_and_announces_the_rest(tmp_path):
    config = ToyConfig(steps=4)
    _fit(config, tmp_path / "r", stop_after=2)
    with pytest.raises(UserError, match="cannot change --width 3 → 4 on resume"):
        _fit(ToyConfig(steps=4, width=4), tmp_path / "r")
    said = []
    run = RunFolder(tmp_path / "r")
    with run.locked():
        fit(Toy(ToyConfig(steps=6, lr=0.01)), run, steps=6, eval_every=2, progress=False,
            tensorboard=False, say=said.append)
    assert any("changed on resume: lr 0.05 → 0.01; steps 4 → 6" in line for line in said)
    assert json.loads((tmp_path / "r" / "config.json").read_text())["steps"] == 6


def test_a_nan_stops_before_saving_and_keeps_the_last_good_checkpoint(tmp_path):
    config = ToyConfig()
    with pytest.raises(TrainingDiverged, match="at step 3.*last good checkpoint"):
        _fit(config, tmp_path / "n", training=Toy(config, blow_up_at=3))
    assert load_checkpoint(tmp_path / "n" / "checkpoint.pt")["step"] == 2


def test_sigterm_finishes_the_step_saves_and_stops(tmp_path):
    config = ToyConfig()
    before = signal.getsignal(signal.SIGTERM)
    _, summary = _fit(config, tmp_path / "t", training=Toy(config, signal_at=3))
    assert summary["status"] == "interrupted" and summary["step"] == 3
    assert load_checkpoint(tmp_path / "t" / "checkpoint.pt")["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    holder = RunFolder(tmp_path / "busy")
    with holder.locked():
        with pytest.raises(UserError, match=rf"in use by another fwp process \(pid {os.getpid()}"):
            _fit(ToyConfig(), tmp_path / "busy")
    _fit(ToyConfig(steps=2), tmp_path / "busy")  # released: the folder trains


def test_a_refused_start_leaves_no_folder(tmp_path):
    _fit(ToyConfig(steps=2), tmp_path / "done")
    with pytest.raises(UserError, match="past the 1 steps"):
        _fit(ToyConfig(steps=1), tmp_path / "done")
    config = ToyConfig()
    target = tmp_path / "new" / "run"
    run = RunFolder(target)
    with pytest.raises(UserError), run.locked():
        raise UserError("a check failed")
    assert not (tmp_path / "new").exists()
    assert to_dict(config)["steps"] == 8


def test_a_finished_run_is_returned_extended_or_refused(tmp_path):
    """RunFolder.finished: the saved result for the same config (a runtime field may differ);
    None, with the old result deleted, for one that goes on learning; a refused change raises."""
    _fit(ToyConfig(steps=2), tmp_path / "run")
    result = tmp_path / "run" / "result.json"
    result.write_text(json.dumps({"error": 0.5}))
    folder, lines = RunFolder(tmp_path / "run"), []
    assert folder.finished("result.json", ToyConfig(steps=2, threads=4), lines.append) == {
        "error": 0.5}
    assert lines == [f"{tmp_path / 'run'}: already finished"]
    with pytest.raises(UserError, match="cannot change --width 3 → 4"):
        folder.finished("result.json", ToyConfig(steps=2, width=4), lines.append)
    assert result.is_file()
    assert folder.finished("result.json", ToyConfig(steps=4), lines.append) is None
    assert not result.exists()
    assert folder.finished("result.json", ToyConfig(steps=2), lines.append) is None


def test_each_validation_line_says_the_time_left_but_the_last(tmp_path):
    config = ToyConfig(steps=6)
    lines: list[str] = []
    run = RunFolder(tmp_path / "p")
    with run.locked():
        fit(Toy(config), run, steps=6, eval_every=2, log_every=1, progress=False,
            tensorboard=False, say=lines.append)
    progress = [line for line in lines if line.startswith("step ")]
    assert [line.split(":")[0] for line in progress] == ["step 2/6", "step 4/6", "step 6/6"]
    assert all(" left" in line for line in progress[:2]) and " left" not in progress[2]
    assert re.search(r"; about \d+m\d\ds left$", progress[0]), progress[0]
