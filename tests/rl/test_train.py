"""fwp rl training: run folders, exact resume, seeded evaluation, refusals (a few updates)."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from fwp.cli import main
from fwp.errors import RunStopped, UserError
from fwp.rl.config import RLConfig
from fwp.rl.ppo import Rollout, gae
from fwp.rl.train import EVAL, PPOLearner, train
from fwp.runs import CHECKPOINT, METRICS, RunFolder, load_checkpoint, read_metrics


def tiny(**fields) -> RLConfig:
    config = RLConfig(n_envs=4, rollout=16, checkpoint_every=2, eval_episodes=3,
                      anneal_lr=False, frames=4 * 16 * 4)
    config.network.d_model, config.network.heads = 16, 2
    if fields.get("algo") != "r2ac":
        config.minibatches, config.epochs, config.network.d_ff = 2, 2, 32
    for key, value in fields.items():
        target = config.network if hasattr(config.network, key) else config
        setattr(target, key, value)
    return config


def rows(run: Path) -> list[dict]:
    """The logged training and validation rows without the timings."""
    timing = ("fps", "cpu_fps", "steps_per_s")
    return [{k: v for k, v in row.items() if k not in timing}
            for row in read_metrics(run / METRICS) if row["split"] in ("train", "val")]


@pytest.mark.parametrize("fields", [
    pytest.param({"model": "lstm"}, marks=pytest.mark.slow), {"model": "srwm"},
    {"algo": "r2ac", "cell": "fwp_sum", "gradient": "rtrl"}], ids=["lstm", "srwm", "r2ac"])
def test_resume_is_the_same_run(tmp_path: Path, fields: dict) -> None:
    """Stopped after its first checkpoint and resumed, a run ends where one that never stopped
    ends: the same weights, the same logged returns, losses and validations (for R2AC also with
    the RTRL sensitivities, which restart with the environments)."""
    train(tiny(**fields), tmp_path / "whole", log=None)
    train(tiny(**fields, frames=2 * 4 * 16), tmp_path / "part", log=None)
    assert load_checkpoint(tmp_path / "part" / CHECKPOINT)["step"] == 2
    train(tiny(**fields), tmp_path / "part", log=None)  # extends: frames may change
    a = load_checkpoint(tmp_path / "whole" / CHECKPOINT)["model"]
    b = load_checkpoint(tmp_path / "part" / CHECKPOINT)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert rows(tmp_path / "whole") == rows(tmp_path / "part")
    eval_a = json.loads((tmp_path / "whole" / EVAL).read_text())
    eval_b = json.loads((tmp_path / "part" / EVAL).read_text())
    assert eval_a["returns"] == eval_b["returns"]


def test_evaluation_is_seeded(tmp_path: Path) -> None:
    from fwp.rl.evaluate import run_episodes
    from fwp.rl.train import load_policy

    train(tiny(), tmp_path / "run", log=None)
    _, spec, policy = load_policy(tmp_path / "run")
    first = run_episodes(policy, spec, 4, seed=7)
    assert run_episodes(policy, spec, 4, seed=7)["returns"] == first["returns"]
    assert run_episodes(policy, spec, 4, seed=8)["returns"] != first["returns"]


def test_r2ac_trains(tmp_path: Path) -> None:
    for gradient in ("rtrl", "tbptt"):
        config = tiny(algo="r2ac", cell="fwp_sum", gradient=gradient, rollout=8,
                      frames=2 * 4 * 8, eval_episodes=1)
        result = train(config, tmp_path / gradient, log=None)
        assert result["frames"] == config.frames


def test_a_changed_config_is_refused(tmp_path: Path) -> None:
    train(tiny(), tmp_path / "run", log=None)
    with pytest.raises(UserError, match="cannot change --gamma 0.99 → 0.9 on resume"):
        train(tiny(gamma=0.9), tmp_path / "run", log=None)
    again = train(tiny(threads=2), tmp_path / "run", log=None)  # runtime: the same finished run
    assert again == json.loads((tmp_path / "run" / EVAL).read_text())


def test_sigterm_saves_and_the_same_command_resumes(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM during update 3: the update finishes, the checkpoint is saved there, the run
    stops; the same call resumes it to the end."""
    update, calls = PPOLearner.update, []

    def signalling(self, actor, episodes):  # noqa: ANN001, ANN202
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return update(self, actor, episodes)

    monkeypatch.setattr(PPOLearner, "update", signalling)
    with pytest.raises(RunStopped, match="stopped at update 3"):
        train(tiny(checkpoint_every=4), tmp_path / "run", log=None)
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT)["step"] == 3
    assert not (tmp_path / "run" / EVAL).exists()
    monkeypatch.setattr(PPOLearner, "update", update)
    assert train(tiny(checkpoint_every=4), tmp_path / "run", log=None)["updates"] == 4


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    with RunFolder(tmp_path / "run").locked(), pytest.raises(UserError, match="in use by"):
        train(tiny(), tmp_path / "run", log=None)


def test_cli_refuses_flags_of_the_other_learner(capsys: pytest.CaptureFixture) -> None:
    assert main(["rl", "train", "--cell", "fwp_sum", "--out", "unused"]) == 2
    assert "--cell does not apply to --algo ppo" in capsys.readouterr().err
    assert main(["rl", "train", "--algo", "r2ac", "--epochs", "3", "--out", "unused"]) == 2
    assert "--epochs does not apply to --algo r2ac" in capsys.readouterr().err


def test_cli_refuses_a_bad_env_before_any_work(tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    assert main(["rl", "train", "--env", "FrozenLake-v1", "--out", str(tmp_path / "r")]) == 2
    assert "Box observation" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_gae_by_hand() -> None:
    """Two steps, an episode end after the first: A_1 = r_1 + γV' − V_1; A_0 = r_0 − V_0."""
    t = lambda *v: torch.tensor([list(v)])  # noqa: E731
    rollout = Rollout(obs=torch.zeros(1, 2, 1), start=t(True, True), actions=t(0, 0),
                      logp=t(0.0, 0.0), values=t(0.5, 0.25), rewards=t(1.0, 2.0),
                      dones=t(True, False), initial_state=None, next_value=torch.tensor([4.0]))
    gae(rollout, gamma=0.5, lam=0.5)
    torch.testing.assert_close(rollout.advantages, t(0.5, 3.75))
    torch.testing.assert_close(rollout.returns, t(1.0, 4.0))


def test_sweep_trains_reports_and_resumes(tmp_path: Path) -> None:
    from fwp.rl.sweep import sweep

    grid = tmp_path / "grid.toml"
    small = ('frames = 128\nn_envs = 4\nrollout = 16\nminibatches = 2\nval_episodes = 1\n'
             'eval_episodes = 2\nnetwork = {{ model = "{}", d_model = 16, heads = 2, '
             'd_ff = 32 }}\n')
    grid.write_text("seeds = [1, 2]\n[runs.small]\n" + small.format("deltanet")
                    + "[runs.base]\n" + small.format("lstm"))
    table = sweep(grid, tmp_path / "study", log=None)
    assert "1×deltanet | 2 (2)" in table and "1×lstm | 2 (2)" in table
    assert "| cartpole-pomdp | 1×deltanet | 1×lstm | 2 |" in table  # the paired row
    assert (tmp_path / "study" / "returns.png").is_file()
    before = (tmp_path / "study/runs/small/seed1/metrics.jsonl").read_text()
    sweep(grid, tmp_path / "study", log=None)  # finished runs are skipped
    assert (tmp_path / "study/runs/small/seed1/metrics.jsonl").read_text() == before
    (tmp_path / "study" / "report.md").unlink()
    assert main(["rl", "report", str(tmp_path / "study")]) == 0  # a sweep folder: into it
    assert "1×deltanet | 2 (2)" in (tmp_path / "study" / "report.md").read_text()
    run = str(tmp_path / "study/runs/small/seed1")
    assert main(["rl", "report", run]) == 2  # run folders need --out
    assert main(["rl", "report", run, "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "returns.png").is_file()
    grid.write_text(grid.read_text().replace("rollout = 16", "rollout = 8", 1))
    with pytest.raises(UserError, match="trained with another config"):
        sweep(grid, tmp_path / "study", log=None)


def test_paired_differences_by_seed_and_episode() -> None:
    """core − reference per seed (+1, +3: mean +2) and per episode; a run without a reference
    (another env) and an unfinished one add no row; Holm over the rows."""
    from fwp.config import to_dict
    from fwp.rl.report import paired_table

    def run(model: str, seed: int, returns: list[float], env: str = "cartpole-pomdp") -> dict:
        config = to_dict(tiny(model=model, seed=seed, env=env))
        return {"config": config, "eval": {"mean_return": sum(returns) / len(returns),
                                           "returns": returns}}

    runs = [run("lstm", 1, [10, 20]), run("lstm", 2, [10, 10]),
            run("srwm", 1, [11, 21]), run("srwm", 2, [13, 13]),
            run("srwm", 1, [5, 5], env="MiniGrid-Empty-5x5-v0"),
            {**run("deltanet", 1, [0, 0]), "eval": None}]
    lines = paired_table(runs)
    rows = [line for line in lines if line.startswith("| cartpole")]
    assert len(rows) == 1 and "| 1×srwm | 1×lstm | 2 | +2.00 |" in rows[0]
    assert rows[0].endswith("| 0.295 | no detectable difference |")  # t = 2, 1 df
