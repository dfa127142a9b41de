"""``fwp fewshot sweep``: a tiny grid end to end, resuming, refusing a changed config."""

import json
from pathlib import Path

import pytest
import torch

from fwp.cli import main
from fwp.errors import UserError
from fwp.fewshot.checkpoint import CHECKPOINT, METRICS
from fwp.fewshot.grid import EVAL, Grid, build_grid, grid_spec_from_args, read_grid_file
from fwp.fewshot.sweep import sweep
from fwp.fewshot.sweep_report import (
    beta2_pairs,
    compared_pairs,
    mean_curve,
    validation_curve,
    write_report,
)
from fwp.fewshot.train import train


def tiny_spec(root, seeds=(1, 2), **changes):
    shared = dict(
        dataset="folder", data_root=str(root), n_way=3, k_shot=2, k_extra=1, conv_channels=8,
        layers=1, d_model=16, heads=2, d_ff=32, schedule="cosine", lr=3e-3, warmup=2,
        batch_size=4, steps=4, eval_every=2, val_episodes=6, log_every=1, beta3=1.0,
    )
    shared.update(changes)
    return {
        "seeds": list(seeds), "k_test": [1, 2], "test_episodes": 6, "set": shared,
        "configs": [{"name": "off", "beta2": 0.0}, {"name": "on", "beta2": 2.0}],
    }


@pytest.mark.slow
def test_sweep_end_to_end_two_configs_two_seeds(tiny_root, tmp_path):
    grid = build_grid(tiny_spec(tiny_root))
    assert beta2_pairs(grid) == [("off", "on")]
    lines = []
    done = sweep(grid, tmp_path, jobs=2, threads=2, log=lines.append)
    assert len(done) == 4 and "4 to run" in lines[0] and "2 job(s) × 1 thread(s)" in lines[0]
    assert any("runs left, about" in line for line in lines)
    for name in ("off", "on"):
        for seed in (1, 2):
            saved = json.loads((tmp_path / "runs" / name / f"seed{seed}" / EVAL).read_text())
            assert [r["k_test"] for r in saved["results"]] == [1, 2]
            assert all(len(r["per_episode"]) == 6 for r in saved["results"])
    report = (tmp_path / "report.md").read_text()
    assert "4 of 4 runs evaluated" in report and "### on − off" in report
    assert report.count("| 1: ") == 2  # one paired row per K_test, seeds listed
    assert (tmp_path / "accuracy_vs_k.png").is_file()
    assert (tmp_path / "bootstrap_differences.png").is_file()
    assert (tmp_path / "validation_curves.png").is_file()
    assert "| config | 2 | 4 |" in report  # validation at steps 2 and 4, mean over seeds
    # started again: nothing to do, nothing retrained
    stamp = (tmp_path / "runs" / "on" / "seed1" / CHECKPOINT).stat().st_mtime_ns
    lines.clear()
    assert sweep(grid, tmp_path, log=lines.append) == []
    assert "0 to run" in lines[0]
    assert (tmp_path / "runs" / "on" / "seed1" / CHECKPOINT).stat().st_mtime_ns == stamp


def test_run_killed_midway_is_resumed_and_equals_an_uninterrupted_one(tiny_root, tmp_path):
    spec = tiny_spec(tiny_root, seeds=(3,), steps=6)
    spec["configs"] = spec["configs"][1:]
    grid = build_grid(spec)
    sweep(grid, tmp_path / "whole", threads=1, log=lambda _: None, report=False)
    # the same run stopped after 3 of 6 steps (as a kill after a checkpoint), then the sweep
    cut = tmp_path / "cut" / "runs" / "on" / "seed3"
    assert train(grid.config("on", 3, 1), cut, stop_after=3, progress=False)["step"] == 3
    lines = []
    sweep(grid, tmp_path / "cut", threads=1, log=lines.append, report=False)
    assert any("resuming at step 3" in line for line in lines)
    whole = tmp_path / "whole" / "runs" / "on" / "seed3"
    a = torch.load(whole / CHECKPOINT, weights_only=True)
    b = torch.load(cut / CHECKPOINT, weights_only=True)
    assert a["step"] == b["step"] == 6
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0)
    ea = json.loads((whole / EVAL).read_text())["results"]
    eb = json.loads((cut / EVAL).read_text())["results"]
    assert [r["per_episode"] for r in ea] == [r["per_episode"] for r in eb]


def test_changed_config_is_refused_before_any_work(tiny_root, tmp_path):
    grid = build_grid(tiny_spec(tiny_root, seeds=(1,)))
    run = tmp_path / "runs" / "on" / "seed1"
    run.mkdir(parents=True)
    old = grid.config("on", 1, 1)
    old.steps = 9
    from fwp.config import to_dict

    (run / "config.json").write_text(json.dumps(to_dict(old)))
    with pytest.raises(UserError, match=r"steps: 9 → 4.*another name"):
        sweep(grid, tmp_path, log=lambda _: None)
    assert not (tmp_path / "runs" / "off").exists()
    # another thread count (another --jobs) is not a change
    old.steps, old.threads = 4, 7
    (run / "config.json").write_text(json.dumps(to_dict(old)))
    from fwp.runs.sweep import check_run_folders

    check_run_folders([("on", run, grid.config("on", 1, 1))], "")


def test_grid_from_presets_and_vary():
    spec = grid_spec_from_args(["demo"], [("steps", 10)], [("beta2", [0.0, 5.0])], [1, 2, 3],
                               None, 200)
    grid = build_grid(spec)
    assert list(grid.configs) == ["demo+beta2=0", "demo+beta2=5"]
    assert all(c.steps == 10 for c in grid.configs.values())
    assert grid.test_episodes == 200 and grid.k_test == [1, 5, 10, 15]
    assert beta2_pairs(grid) == [("demo+beta2=0", "demo+beta2=5")]
    with pytest.raises(UserError, match="unknown field 'stepz'"):
        build_grid(grid_spec_from_args(["demo"], [("stepz", 1)], [], None, None, None))
    with pytest.raises(UserError, match="no configs"):
        build_grid({"seeds": [1]})
    assert list(grid.restricted(["demo+beta2=5"]).configs) == ["demo+beta2=5"]
    with pytest.raises(UserError, match="no such config"):
        grid.restricted(["demo"])


def test_time_left_counts_training_steps_and_test_time_apart(tiny_root, tmp_path, monkeypatch):
    import fwp.fewshot.sweep as sweeping

    def fake(task):  # 1 s per training step, 60 s of testing per run
        return {"name": task.name, "seed": task.seed, "steps": 100, "train_s": 100.0,
                "total_s": 160.0}

    monkeypatch.setattr(sweeping, "run_task", fake)
    lines = []
    sweep(build_grid(tiny_spec(tiny_root, steps=100)), tmp_path, log=lines.append, report=False)
    # after the first run: 3 runs of 100 steps and 3 tests left = 480 s
    assert "3 runs left, about 8m00s" in lines[2]
    assert any("1 run left, about 2m40s" in line for line in lines)


def test_compare_pairs_are_validated_kept_and_reported(tiny_root, tmp_path):
    spec = tiny_spec(tiny_root)
    spec["configs"].append({"name": "other", "beta2": 0.0, "lr": 1e-2})
    spec["compare"] = [["off", "other"]]
    grid = build_grid(spec)
    assert grid.compare == [("off", "other")]
    assert compared_pairs(grid) == [("off", "on"), ("off", "other")]
    assert Grid.from_json(json.loads(json.dumps(grid.to_json()))).compare == grid.compare
    assert grid.restricted(["off", "on"]).compare == []
    with pytest.raises(UserError, match="'nope', not a config of the grid"):
        build_grid({**spec, "compare": [["off", "nope"]]})
    with pytest.raises(UserError, match="pairs of config names"):
        build_grid({**spec, "compare": [["off"]]})
    # known numbers: "other" is 2 (seed 1) and 2.1 (seed 2) points above "off" on every episode
    for name, shift in (("off", 0.0), ("other", 2.0)):
        for seed in (1, 2):
            run = tmp_path / "runs" / name / f"seed{seed}"
            run.mkdir(parents=True)
            per_episode = [50.0 + 10 * seed + (i % 3) + shift * (0.95 + 0.05 * seed)
                           for i in range(6)]
            results = [{"k_test": k, "accuracy": sum(per_episode) / 6, "per_episode": per_episode}
                       for k in (1, 2)]
            (run / EVAL).write_text(json.dumps({"episodes": 6, "split": "test",
                                                "results": results}))
    report = write_report(tmp_path, grid).read_text()
    section = report[report.index("### other − off"):]
    assert "| 1 | 1: +2.0, 2: +2.1 | +2.05 |" in section and "gain" in section.splitlines()[4]
    # fwp fewshot report DIR: the same report, from the grid the sweep saved
    (tmp_path / "report.md").unlink()
    (tmp_path / "grid.json").write_text(json.dumps(grid.to_json()))
    assert main(["fewshot", "report", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").read_text() == report
    assert main(["fewshot", "report", str(tmp_path), "--out", str(tmp_path / "x")]) == 2


def _fake_evaluation(root, name, seed, per_episode):
    run = root / "runs" / name / f"seed{seed}"
    run.mkdir(parents=True)
    results = [{"k_test": k, "accuracy": sum(per_episode) / len(per_episode),
                "per_episode": per_episode} for k in (1, 2)]
    (run / EVAL).write_text(json.dumps({"episodes": len(per_episode), "split": "test",
                                        "results": results}))


def test_interaction_tests_how_a_difference_changes(tiny_root, tmp_path):
    spec = tiny_spec(tiny_root, seeds=(1, 2, 3))
    spec["configs"] += [{"name": "off_long", "beta2": 0.0, "steps": 8},
                        {"name": "on_long", "beta2": 2.0, "steps": 8}]
    spec["interaction"] = [[["off", "on"], ["off_long", "on_long"]]]
    grid = build_grid(spec)
    assert grid.interaction == [(("off", "on"), ("off_long", "on_long"))]
    assert Grid.from_json(json.loads(json.dumps(grid.to_json()))).interaction == grid.interaction
    assert grid.restricted(["off", "on", "off_long"]).interaction == []
    with pytest.raises(UserError, match="'nope', not a config of the grid"):
        build_grid({**spec, "interaction": [[["off", "on"], ["off_long", "nope"]]]})
    with pytest.raises(UserError, match="pairs of pairs"):
        build_grid({**spec, "interaction": [[["off", "on"]]]})
    with pytest.raises(UserError, match="interaction needs a list"):
        build_grid(read_grid_file(_toml(tmp_path, 'interaction = "off"\n')))
    # known numbers: on − off is 1 point at the short budget and 4 + seed at the long one,
    # so the change is 4, 5, 6 points (seed 1, 2, 3) on every episode
    for seed in (1, 2, 3):
        base = [50.0 + 10 * seed + (i % 3) for i in range(6)]
        for name, shift in (("off", 0), ("on", 1), ("off_long", 5), ("on_long", 9 + seed)):
            _fake_evaluation(tmp_path, name, seed, [x + shift for x in base])
    report = write_report(tmp_path, grid).read_text()
    section = report[report.index("## How a difference changes"):]
    assert "### (on_long − off_long) − (on − off)" in section
    row = next(line for line in section.splitlines() if line.startswith("| 1 |"))
    # t = 5 / (1 / √3) with 2 degrees of freedom: p = 0.013
    assert "1: +4.0, 2: +5.0, 3: +6.0 | +5.00 |" in row and "| gain |" in row
    assert "[+5.00, +5.00]" in row  # over episodes: the change is the same on every episode
    # the family of Holm: 2 pairs × 2 K_test + 1 interaction × 2 K_test
    assert "each of the report's 6 comparisons" in report


def _toml(tmp_path, extra):
    path = tmp_path / "grid.toml"
    path.write_text(extra + '[[configs]]\npreset = "demo"\n')
    return path


def test_validation_curves_mean_over_seeds(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / METRICS).write_text(
        '{"step": 1, "split": "train", "loss": 1.0}\n{"step": 2, "split": "val", "accuracy": 30}\n'
        '{"step": 4, "split": "val", "accuracy": 50}\n{"step": 6, "split": "va')  # cut by a stop
    assert validation_curve(run) == {2: 30.0, 4: 50.0}
    assert validation_curve(tmp_path / "missing") == {}
    steps, mean, band = mean_curve({1: {2: 30.0, 4: 50.0}, 2: {2: 40.0, 4: 70.0, 6: 80.0}})
    assert steps == [2, 4] and mean.tolist() == [35.0, 60.0]
    assert band.tolist() == [[30.0, 50.0], [40.0, 70.0]]
    assert mean_curve({})[0] == []


def test_grid_file_on_a_base_grid(tmp_path):
    (tmp_path / "parent.toml").write_text(
        'seeds = [1, 2]\ntest_episodes = 7\n[set]\nsteps = 9\nlr = 0.01\n'
        '[[configs]]\npreset = "demo"\n')
    (tmp_path / "child.toml").write_text(
        f'base = "{tmp_path / "parent.toml"}"\nseeds = [4]\n[set]\nlr = 0.5\n'
        '[[configs]]\nname = "a"\npreset = "demo"\nbeta2 = 1.0\n')
    spec = read_grid_file(tmp_path / "child.toml")
    assert spec["seeds"] == [4] and spec["test_episodes"] == 7
    assert spec["set"] == {"steps": 9, "lr": 0.5}
    assert [c.get("name") for c in spec["configs"]] == ["a"]
    (tmp_path / "loop.toml").write_text(f'base = "{tmp_path / "loop.toml"}"\n')
    with pytest.raises(UserError, match="comes back to itself"):
        read_grid_file(tmp_path / "loop.toml")
    # the shipped follow-up grid: the study's K = 5 pair unchanged, one config with β2 = 1
    study, follow_up = (build_grid(read_grid_file(n))
                        for n in ("bootstrapping", "bootstrapping_beta2"))
    assert list(follow_up.configs) == ["table2_k5", "table2_k5_boot", "table2_k5_boot_beta2_1"]
    for name in ("table2_k5", "table2_k5_boot"):
        assert follow_up.configs[name] == study.configs[name]
    assert follow_up.configs["table2_k5_boot_beta2_1"].loss.beta2 == 1.0
    assert beta2_pairs(follow_up) == [("table2_k5", "table2_k5_boot"),
                                      ("table2_k5", "table2_k5_boot_beta2_1")]
    assert study.compare and follow_up.compare == []  # compare goes with the configs


def test_a_stopped_run_stops_the_sweep_with_a_resume_hint(tiny_root, tmp_path, monkeypatch):
    import fwp.fewshot.train as training

    monkeypatch.setattr(training, "train",
                        lambda *args, **kwargs: {"status": "interrupted", "step": 2, "signal": 2})
    lines = []
    assert sweep(build_grid(tiny_spec(tiny_root)), tmp_path, log=lines.append) == []
    assert "off/seed1 stopped at step 2" in lines[-1] and "same command to resume" in lines[-1]


def test_only_trains_a_subset_and_the_report_keeps_every_config_and_seed(tiny_root, tmp_path,
                                                                         monkeypatch):
    """``--only`` trains some configs; the saved grid and the report keep every config, and a
    config trained with more seeds (an earlier call with other ``--seeds``) is reported with
    all of them, paired on the seeds both configs have."""
    import fwp.fewshot.sweep as sweep_module
    from fwp.fewshot.grid import GRID, load_saved_grid

    trained = []

    def fake_run(task):  # writes the evaluation a trained run would: "on" 1 point above "off"
        trained.append((task.name, task.seed))
        accuracy = 60.0 + task.seed + (task.name == "on")
        results = [{"k_test": k, "accuracy": accuracy, "per_episode": [accuracy] * 6}
                   for k in task.k_test]
        (Path(task.run)).mkdir(parents=True, exist_ok=True)
        (Path(task.run) / EVAL).write_text(json.dumps({"episodes": 6, "split": "test",
                                                       "results": results}))
        return {"name": task.name, "seed": task.seed, "steps": 4, "train_s": 0.0,
                "total_s": 0.0}

    monkeypatch.setattr(sweep_module, "run_task", fake_run)
    three = build_grid(tiny_spec(tiny_root, seeds=(1, 2, 3)))
    sweep(three, tmp_path, only=["off"], log=lambda line: None)
    assert trained == [("off", 1), ("off", 2), ("off", 3)]
    assert set(load_saved_grid(tmp_path).configs) == {"off", "on"}
    assert json.loads((tmp_path / GRID).read_text())["seeds"] == [1, 2, 3]
    trained.clear()
    sweep(build_grid(tiny_spec(tiny_root, seeds=(1, 2))), tmp_path, only=["on"],
          log=lambda line: None)
    assert trained == [("on", 1), ("on", 2)]
    report = (tmp_path / "report.md").read_text()
    assert "4 of 4 runs evaluated" in report and "and 1 of other seeds" in report
    assert "| 1 | 1: +1.0, 2: +1.0 | +1.00 |" in report  # paired on seeds 1 and 2
    assert "(3)" in report  # "off" has its three seeds in the accuracy table
