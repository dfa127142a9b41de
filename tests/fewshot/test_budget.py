"""A CPU run of a configuration sized for a GPU says so before it starts, naming the preset."""

from __future__ import annotations

import pytest

from fwp.fewshot import budget
from fwp.fewshot.config import RunConfig, from_dict, preset
from fwp.fewshot.train import train

from .conftest import tiny_config


@pytest.mark.parametrize("name, shape", [("table1_k5", (3, 84, 84)),
                                         ("omniglot_srwm_5w1s", (1, 28, 28))])
def test_paper_presets_are_sized_for_a_gpu(name, shape):
    notice = budget.gpu_notice(from_dict(preset(name)), shape)
    assert notice and "sized for a GPU" in notice and "--preset demo" in notice


def test_demo_and_the_defaults_are_cpu_sized():
    assert budget.gpu_notice(from_dict(preset("demo")), (1, 28, 28)) is None
    assert budget.gpu_notice(RunConfig(), (1, 28, 28)) is None


def test_work_grows_with_the_episode():
    small = from_dict(preset("demo"))
    big = from_dict(preset("demo"))
    big.data.k_shot *= 2
    assert budget.step_work(big, (1, 28, 28)) > budget.step_work(small, (1, 28, 28))


def test_train_prints_the_notice_before_training(tiny_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(budget, "GPU_SIZED", -1.0)
    train(tiny_config(tiny_root, steps=2), tmp_path / "run", progress=False)
    assert "sized for a GPU" in capsys.readouterr().out
