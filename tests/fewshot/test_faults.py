"""Faults injected into few-shot runs (refused resumes, impossible episodes, a file as --out, a
size-limited output): each is one line naming the problem and the fix, nothing is lost, nothing
changes silently, and the corrected command is never blocked."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fwp.cli import main
from fwp.fewshot.checkpoint import CHECKPOINT, CONFIG, METRICS, load_checkpoint
from fwp.fewshot.protocols import episodic as train_module
from fwp.fewshot.train import lr_factor
from tests.limits import error_line, fwp

from .conftest import tiny_config


def tiny_flags(root) -> list[str]:
    return ["--dataset", "folder", "--data-root", str(root), "--n-way", "3", "--k-shot", "1",
            "--conv-channels", "8", "--layers", "1", "--d-model", "16", "--heads", "2",
            "--d-ff", "16", "--eval-every", "2", "--val-episodes", "4", "--batch-size", "2",
            "--threads", "1", "--no-progress", "--log-every", "1"]


def train_cli(*argv) -> int:
    return main(["fewshot", "train", *map(str, argv)])


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fwp: error: "), err
    return err[0]


def rows(run, split="train") -> list[dict]:
    lines = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
    return [r for r in lines if r["split"] == split]


def test_a_refused_resume_changes_nothing(tiny_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli(*tiny_flags(tiny_root), "--steps", "2", "--out", run) == 0
    saved = (run / CONFIG).read_bytes()
    capsys.readouterr()
    assert train_cli("--out", run, "--resume", "--d-model", "64") == 2
    line = one_error(capsys)
    assert "cannot change --d-model 16 → 64 on resume" in line and "another --out" in line
    assert (run / CONFIG).read_bytes() == saved
    assert train_cli("--out", run, "--resume", "--steps", "4") == 0
    assert main(["fewshot", "eval", str(run), "--k-test", "1", "--episodes", "4"]) == 0


def test_lr_given_on_resume_is_the_rate_the_optimiser_uses(tiny_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli(*tiny_flags(tiny_root), "--schedule", "constant", "--lr", "3e-3",
                     "--steps", "2", "--out", run) == 0
    capsys.readouterr()
    assert train_cli("--out", run, "--resume", "--lr", "1e-5", "--steps", "4") == 0
    out = capsys.readouterr().out
    assert "changed on resume: lr 0.003 → 1e-05" in out and "steps 2 → 4" in out
    assert [r["lr"] for r in rows(run)] == [3e-3, 3e-3, 1e-5, 1e-5]
    assert json.loads((run / CONFIG).read_text())["optim"]["lr"] == 1e-5
    groups = load_checkpoint(run / CHECKPOINT)["optimizer"]["param_groups"]
    assert all(g["lr"] == 1e-5 for g in groups)


def test_extending_a_cosine_run_is_announced_and_follows_the_longer_schedule(
    tiny_root, tmp_path, capsys
):
    run = tmp_path / "run"
    assert train_cli(*tiny_flags(tiny_root), "--schedule", "cosine", "--lr", "3e-3",
                     "--warmup", "1", "--steps", "4", "--out", run) == 0
    assert rows(run)[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # the cosine ended at step 4
    capsys.readouterr()
    assert train_cli("--out", run, "--resume", "--steps", "8") == 0
    out = capsys.readouterr().out
    longer = tiny_config(tiny_root, steps=8, warmup=1, lr=3e-3, schedule="cosine")
    rate = 3e-3 * lr_factor(longer, 4)
    assert "changed on resume: steps 4 → 8" in out
    assert f"learning rate of step 5: 0 → {rate:.3g}" in out
    logged = [r["lr"] for r in rows(run)][4:]
    assert logged == pytest.approx([3e-3 * lr_factor(longer, s) for s in range(5, 9)])
    assert not math.isclose(logged[0], 0.0)


def test_retyping_the_preset_on_resume_keeps_the_flags_given_at_the_start(
    tiny_root, tmp_path, capsys
):
    run = tmp_path / "run"
    assert train_cli("--preset", "demo", *tiny_flags(tiny_root), "--steps", "2",
                     "--out", run) == 0
    capsys.readouterr()
    assert train_cli("--preset", "demo", "--out", run, "--resume", "--steps", "4") == 0
    out = capsys.readouterr().out
    assert "the run keeps its own config over --preset demo" in out and "d_model 16" in out
    config = json.loads((run / CONFIG).read_text())
    assert config["network"]["d_model"] == 16 and config["steps"] == 4
    assert load_checkpoint(run / CHECKPOINT)["step"] == 4


def test_episode_shapes_of_every_split_are_checked_before_training(
    tiny_root, tmp_path, capsys, monkeypatch
):
    """The tiny set's val split has 4 classes: 5-way episodes are refused before the first step
    and before anything is written (the train split, with 8, would have trained)."""
    steps = []
    monkeypatch.setattr(train_module, "bootstrap_loss", lambda *a, **k: steps.append(1))
    run = tmp_path / "run"
    assert train_cli(*tiny_flags(tiny_root), "--n-way", "5", "--steps", "2", "--out", run) == 2
    line = one_error(capsys)
    assert "split 'val'" in line and "only 4 classes" in line and "--n-way" in line
    assert steps == [] and not run.exists()


def test_a_small_folder_data_set_is_refused_before_training(tmp_path, capsys, tiny_root):
    """12 classes, no split folders: the seeded split leaves too few for 3-way validation."""
    import shutil

    root = tmp_path / "twelve"
    for i, folder in enumerate(sorted((tiny_root / "train").iterdir())
                               + sorted((tiny_root / "val").iterdir())):
        shutil.copytree(folder, root / f"c{i:02d}")
    run = tmp_path / "run"
    flags = tiny_flags(root)
    assert train_cli(*flags, "--steps", "2", "--out", run) == 2
    line = one_error(capsys)
    assert "split 'val'" in line and "only 2 classes" in line
    assert not run.exists()
    assert train_cli(*flags, "--n-way", "2", "--steps", "2", "--out", run) == 0


def test_a_run_that_failed_before_its_first_checkpoint_does_not_block(
    tiny_root, tmp_path, capsys, monkeypatch
):
    real = train_module.bootstrap_loss

    def diverging(*args, **kwargs):
        loss, parts = real(*args, **kwargs)
        return loss * float("nan"), parts

    monkeypatch.setattr(train_module, "bootstrap_loss", diverging)
    run = tmp_path / "run"
    assert train_cli(*tiny_flags(tiny_root), "--steps", "2", "--out", run) == 2
    assert "no checkpoint was written yet" in one_error(capsys)
    monkeypatch.setattr(train_module, "bootstrap_loss", real)
    assert train_cli(*tiny_flags(tiny_root), "--steps", "2", "--lr", "1e-3", "--out", run) == 0
    assert len(rows(run, "runtime")) == 1 and [r["step"] for r in rows(run)] == [1, 2]


def test_out_naming_a_file_is_one_line(tiny_root, tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("mine\n")
    assert train_cli(*tiny_flags(tiny_root), "--steps", "2", "--out", path) == 2
    assert f"--out {path} is a file" in one_error(capsys)
    assert path.read_text() == "mine\n"


@pytest.mark.slow
def test_a_full_disk_while_saving_loses_nothing_and_resume_works(tiny_root, tmp_path):
    """A cap on file size (RLIMIT_FSIZE; a write past it fails with EFBIG, as a full disk does
    with ENOSPC): the small files fit, the checkpoint does not. One line, no temporary file
    left, the last checkpoint intact, and the same command continues once there is room."""
    run = tmp_path / "run"
    flags = [*tiny_flags(tiny_root), "--out", str(run)]
    assert train_cli(*flags, "--steps", "2") == 0
    limited = fwp("fewshot", "train", *flags, "--resume", "--steps", "4",
                  max_file_bytes=8192)
    line = error_line(limited)
    assert f"cannot write {run}" in line and "File too large" in line
    assert "--resume (the checkpoint of step 2 is intact)" in line
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert load_checkpoint(run / CHECKPOINT)["step"] == 2
    assert train_cli(*flags, "--resume", "--steps", "4") == 0
    assert load_checkpoint(run / CHECKPOINT)["step"] == 4
    assert [r["step"] for r in rows(run)] == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_full_disk_on_the_first_save_does_not_block_the_rerun(tiny_root, tmp_path):
    from fwp.data import load_dataset

    for split in ("train", "val", "test"):  # the image cache exists: only the run is limited
        load_dataset("folder", tiny_root, split)
    run = tmp_path / "run"
    flags = [*tiny_flags(tiny_root), "--out", str(run), "--steps", "2"]
    line = error_line(fwp("fewshot", "train", *flags, max_file_bytes=8192))
    assert "cannot write" in line
    assert "without --resume (no checkpoint was written yet)" in line
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert train_cli(*flags) == 0
    assert torch.load(run / CHECKPOINT, weights_only=True)["step"] == 2


def test_eval_checks_every_k_test_before_evaluating_any(tiny_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli(*tiny_flags(tiny_root), "--steps", "2", "--out", run) == 0
    capsys.readouterr()
    assert main(["fewshot", "eval", str(run), "--k-test", "1", "15", "--episodes", "4"]) == 2
    assert "K + K' + Q = 16" in one_error(capsys)
    assert not (run / "eval_test.json").exists()


def test_a_log_that_is_not_a_terminal_gets_lines_not_a_bar(tiny_root, tmp_path, capsys):
    flags = [f for f in tiny_flags(tiny_root) if f != "--no-progress"]
    assert train_cli(*flags, "--steps", "4", "--log-every", "3", "--out", tmp_path / "run") == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "\r" not in captured.out
    lines = [line for line in captured.out.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 2/4", "step 4/4"]
    assert "train loss" in lines[0] and "val accuracy" in lines[0]
    assert "nan" not in captured.out  # step 2 reads the steps since the last log line


# -- flags a run never reads (issue 22.5) ------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (("--second-dataset", "glyphs"), "--protocol episodic reads one data set; drop "
                                     "--second-dataset"),
    (("--second-data-root", "x"), "--second-data-root does nothing in this run: --protocol "
                                  "episodic reads one data set"),
    (("--protocol", "sequential", "--second-data-option", "seed=2"),
     "--second-data-option does nothing in this run: it describes --second-dataset, and none"),
    (("--forget-weight", "1"), "--forget-weight does nothing in this run: it weighs the "
                               "continual loss, and --protocol is episodic"),
    (("--protocol", "continual", "--max-trim", "2"), "--max-trim does nothing in this run"),
    (("--protocol", "delayed", "--n-query", "2"), "--n-query does nothing in this run: the "
                                                  "delayed stream has no separate queries"),
    (("--protocol", "delayed", "--test-repeats", "3"), "--test-repeats does nothing"),
    (("--k-extra", "2"), "--k-extra does nothing in this run: the K′ extra examples feed only "
                         "the bootstrapped loss"),
    (("--k-extra", "1", "--beta3", "1", "--distill", "kl"), "--distill does nothing in this "
                                                            "run: D is the distillation"),
    (("--model", "lstm", "--n-beta", "4"), "--n-beta does nothing in this run: it is an option "
                                           "of --model srwm, and --model is lstm"),
    (("--schedule", "constant", "--warmup", "10"), "--warmup does nothing in this run"),
])
def test_a_flag_the_run_never_reads_is_refused(argv, message, tiny_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli(*tiny_flags(tiny_root), "--steps", "2", *argv, "--out", run) == 2
    line = one_error(capsys)
    assert message in line and line.endswith(("; drop --" + argv[-2].lstrip("-"),
                                              "(or use --protocol sequential / continual)"))
    assert not run.exists()


def config_of(*argv: str):
    """The validated config of ``fwp fewshot train ARGV`` (nothing trained)."""
    from fwp.cli import build_parser
    from fwp.fewshot.config import config_from_args

    return config_from_args(build_parser().parse_args(["fewshot", "train", "--out", "x",
                                                       *argv]))


def test_a_flag_that_applies_is_still_taken(tiny_root):
    """The same flags where the run reads them: continual with its weights and a second set."""
    config = config_of(*tiny_flags(tiny_root), "--protocol", "continual", "--forget-weight", "1",
                       "--second-dataset", "glyphs", "--second-data-option",
                       "samples_per_class=4", "--n-query", "1")
    assert config.protocol.forget_weight == 1 and config.protocol.second_data_options == {
        "samples_per_class": 4}


def _saved_run(tmp_path, root, **protocol) -> object:
    """A run folder with only its config.json: eval's flags are checked before the
    checkpoint is read."""
    from fwp.config import to_dict

    config = tiny_config(root)
    for key, value in protocol.items():
        setattr(config.protocol if hasattr(config.protocol, key) else config.data, key, value)
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG).write_text(json.dumps(to_dict(config)))
    return run


@pytest.mark.parametrize("flags", [("--k-test", "5"), ("--repeats", "2"), ("--n-query", "2"),
                                   ("--k-test", "1", "--n-query", "3")])
def test_eval_of_a_continual_run_refuses_the_episodic_flags(flags, tiny_root, tmp_path, capsys):
    run = _saved_run(tmp_path, tiny_root, protocol="continual")
    assert main(["fewshot", "eval", str(run), *flags]) == 2
    line = one_error(capsys)
    given = [f for f in flags if f.startswith("--")]
    verb = "does" if len(given) == 1 else "do"
    assert f"{' '.join(given)} {verb} nothing for {run}: it is a continual run" in line
    assert sorted(p.name for p in run.iterdir()) == [CONFIG]


def test_eval_refuses_n_query_for_a_single_query_run_and_a_k_test_twice(
    tiny_root, tmp_path, capsys
):
    run = _saved_run(tmp_path, tiny_root, single_query=True)
    assert main(["fewshot", "eval", str(run), "--n-query", "3"]) == 2
    assert "--n-query does nothing for" in one_error(capsys)
    assert main(["fewshot", "eval", str(run), "--k-test", "5", "1", "5"]) == 2
    assert "--k-test names 5 twice" in one_error(capsys)


# -- checked up front (issue 22.9, 22.10) ------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (("--adam-beta1", "1.0"), "--adam-beta1 must be in [0, 1) (got 1.0)"),
    (("--adam-beta2", "-0.1"), "--adam-beta2 must be in [0, 1) (got -0.1)"),
    (("--weight-decay", "-0.01"), "--weight-decay must be ≥ 0 (got -0.01)"),
    (("--threads", "-1"), "--threads must be at least 0 (got -1)"),
    (("--protocol", "sequential", "--second-dataset", "omniglot"),
     "data set 'omniglot' is read from your files; pass --second-data-root DIR"),
    (("--protocol", "sequential", "--second-dataset", "glyphs", "--second-data-root", "x"),
     "the glyphs data set is built in and takes no --second-data-root"),
    (("--protocol", "sequential", "--second-dataset", "glyphs", "--second-data-option",
      "image_size=abc"), "--second-data-option image_size='abc' of data set 'glyphs' needs"),
])
def test_optimiser_and_second_data_set_are_checked_before_any_work(
    argv, message, tiny_root, tmp_path, capsys
):
    run = tmp_path / "run"
    assert train_cli(*tiny_flags(tiny_root), "--steps", "2", *argv, "--out", run) == 2
    assert message in one_error(capsys)
    assert not run.exists()


def test_more_threads_than_cores_warns_once(tiny_root, capsys, monkeypatch):
    from fwp import environment

    monkeypatch.setattr(environment, "usable_cores", lambda: 2)
    flags = tiny_flags(tiny_root)
    flags[flags.index("--threads") + 1] = "1000"
    assert config_of(*flags).threads == 1000
    assert capsys.readouterr().err.splitlines() == [
        "fwp: warning: --threads 1000 is more than the 2 CPU cores this process may use; the "
        "threads will wait on each other and training runs slower (use --threads 2, or 0 for "
        "torch's default)"]
    flags[flags.index("--threads") + 1] = "2"
    config_of(*flags)
    assert capsys.readouterr().err == ""


# -- files and folders that are not what fwp expects -------------------------------------------


def test_a_torch_file_that_is_not_a_checkpoint_is_one_line(tiny_root, tmp_path, capsys):
    run = _saved_run(tmp_path, tiny_root)
    for payload in (torch.zeros(3), {"weights": torch.zeros(3)}, [1, 2]):
        torch.save(payload, run / "best.pt")
        assert main(["fewshot", "eval", str(run), "--episodes", "2"]) == 2
        line = one_error(capsys)
        assert "best.pt" in line and "not a checkpoint of fwp" in line
    assert not (run / "eval_test.json").exists()


def test_config_files_of_the_wrong_shape_are_one_line(tiny_root, tmp_path, capsys):
    folder = tmp_path / "configs.toml"
    folder.mkdir()
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    binary = tmp_path / "model.toml"
    binary.write_bytes(b"\x80\x03}q\x00.")
    typed = tmp_path / "typed.toml"
    typed.write_text('steps = "many"\n[data]\nn_way = 2.5\n')
    cases = [(folder, "is a folder; pass the .toml or .json file in it"),
             (listed, "holds a JSON list, not an object of config fields"),
             (binary, "is not text (not UTF-8)"),
             (typed, f"{typed}: steps needs an int, got 'many'")]
    for path, message in cases:
        assert train_cli(*tiny_flags(tiny_root), "--config", path, "--out",
                         tmp_path / "run") == 2
        assert message in one_error(capsys), path
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("grid, message", [
    ('seeds = "123"\n', "seeds needs a list of int, got '123'"),
    ("seeds = [1, 2.5]\n", "seeds needs an int, got 2.5"),
    ("k_test = [5, 5]\n", "k_test must be a non-empty list of distinct integers"),
    ("set = 3\n", "set needs a table of options, got 3"),
    ('configs = "demo"\n', "configs needs a list of dict, got 'demo'"),
    ('test_episodes = "all"\n', "test_episodes needs an int, got 'all'"),
    ("[set]\nsteps = [3]\n", "steps needs an int, got [3]"),
    ("[set]\nstep = 3\n", "unknown field 'step'"),
])
def test_a_grid_file_of_the_wrong_shape_is_one_line(grid, message, tmp_path, capsys):
    path = tmp_path / "grid.toml"
    body = grid if "configs" in grid else grid + '[[configs]]\npreset = "demo"\n'
    if grid.startswith("[set]"):
        body = '[[configs]]\npreset = "demo"\n' + grid
    path.write_text(body)
    assert main(["fewshot", "sweep", str(tmp_path / "sweep"), "--grid", str(path)]) == 2
    assert message in one_error(capsys)
    assert not (tmp_path / "sweep").exists()


def test_folders_given_for_files_and_sweep_flags_that_do_nothing(tmp_path, capsys):
    sweep = ["fewshot", "sweep", str(tmp_path / "sweep")]
    assert main([*sweep, "--grid", str(tmp_path)]) == 2
    assert f"--grid {tmp_path} is a folder" in one_error(capsys)
    assert main([*sweep, "--preset", "demo", "--threads", "-2"]) == 2
    assert "--threads must be ≥ 0 (got -2)" in one_error(capsys)
    assert not (tmp_path / "sweep").exists()
    assert main(["fewshot", "report", str(tmp_path / "run")]) == 2
    assert "run folders need --out DIR" in one_error(capsys)
    assert main(["fewshot", "inspect", "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a folder; pass the picture's file name" in one_error(capsys)


def test_report_refuses_a_run_given_twice(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    assert main(["fewshot", "report", str(run), str(tmp_path / "." / "run" / ".." / "run"),
                 "--out", str(tmp_path / "report")]) == 2
    assert "is given twice (also as" in one_error(capsys)
    assert not (tmp_path / "report").exists()


def test_explain_refuses_a_stream_run(tiny_root, tmp_path, capsys):
    run = _saved_run(tmp_path, tiny_root, protocol="delayed")
    assert main(["fewshot", "explain", str(run), "--out", str(tmp_path / "explain")]) == 2
    assert f"{run} is a delayed run; explain splits an episodic query" in one_error(capsys)
    assert not (tmp_path / "explain").exists()
