"""The command line: flags from the config fields, presets, clear errors, eval and report."""

from __future__ import annotations

import argparse
import json

import pytest

from fwp.errors import UserError
from fwp.fewshot.commands import register
from fwp.fewshot.config import config_from_args, leaves, preset_names


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fwp fewshot")
    register(parser.add_subparsers())
    return parser.parse_args(list(argv))


def test_every_config_field_is_a_flag():
    args = parse("train", "--out", "x")
    for path, _ in leaves():
        assert hasattr(args, path[-1]), path


@pytest.mark.parametrize("name", preset_names())
def test_presets_are_valid(name):
    config = config_from_args(parse("train", "--preset", name, "--out", "x"))
    assert config.network.model in ("srwm", "transformer")
    if name.endswith("_boot"):
        assert config.loss.beta2 > 0 and config.data.k_extra > 0


def test_seed_paper_presets():
    boot = config_from_args(parse("train", "--preset", "table1_k10_boot", "--out", "x"))
    assert (boot.data.k_shot, boot.data.k_extra, boot.loss.beta2, boot.loss.beta3) == (10, 5, 10, 1)
    assert (boot.network.layers, boot.network.heads, boot.network.d_model,
            boot.network.d_ff, boot.optim.batch_size) == (3, 16, 256, 2048, 16)
    plain = config_from_args(parse("train", "--preset", "table1_k5", "--out", "x"))
    assert not plain.bootstrapped and plain.optim.schedule == "noam"


def test_flags_override_presets_and_config_files(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('base = "demo"\nsteps = 7\n[network]\nlayers = 1\n')
    config = config_from_args(parse(
        "train", "--config", str(path), "--layers", "3", "--beta2", "2", "--distill", "kl",
        "--data-option", "image_size=32", "--no-amp", "--out", "x",
    ))
    assert (config.steps, config.network.layers, config.loss.beta2) == (7, 3, 2.0)
    assert config.loss.distill == "kl" and config.amp is False
    assert config.data.data_options == {"image_size": 32}


@pytest.mark.parametrize("argv, message", [
    (("--n-way", "1"), "--n-way must be at least 2"),
    (("--model", "gru"), "unknown --model 'gru'"),
    (("--distill", "mse"), "unknown --distill"),
    (("--beta2", "1"), "set --k-extra"),
    (("--beta1", "-1"), "--beta1 must be ≥ 0"),
    (("--preset", "nope"), "unknown preset 'nope'"),
    (("--config", "missing.toml"), "does not exist"),
    (("--model", "transformer", "--k-extra", "2", "--beta2", "1", "--distill", "weights"),
     "key/value cache"),
    (("--model", "deltanet", "--feature-map", "relu"), "unknown feature map 'relu'"),
])
def test_bad_flag_values(argv, message):
    with pytest.raises(UserError, match=message):
        config_from_args(parse("train", *argv, "--out", "x"))


def test_malformed_flags_exit(capsys):
    with pytest.raises(SystemExit):
        parse("train", "--n-way", "five", "--out", "x")
    assert "not an int" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("eval", "run", "--k-test", "0")


def test_missing_run_folder(tmp_path):
    args = parse("eval", str(tmp_path / "nothing"))
    with pytest.raises(UserError, match="does not exist"):
        args.func(args)


def test_train_eval_report(tiny_root, tmp_path, capsys):
    runs = []
    for name, extra in (("a1", ["--seed", "1"]), ("a2", ["--seed", "2"]),
                        ("b1", ["--k-extra", "1", "--beta2", "1", "--beta3", "1"])):
        run = tmp_path / name
        args = parse(
            "train", "--dataset", "folder", "--data-root", str(tiny_root), "--n-way", "3",
            "--k-shot", "1", "--conv-channels", "8", "--layers", "1", "--d-model", "16",
            "--heads", "2", "--d-ff", "16", "--steps", "2", "--eval-every", "2",
            "--val-episodes", "4", "--batch-size", "2", "--threads", "1", "--no-progress",
            "--out", str(run), *extra,
        )
        assert args.func(args) == 0
        args = parse("eval", str(run), "--k-test", "1", "2", "--episodes", "6")
        assert args.func(args) == 0
        result = json.loads((run / "eval_test.json").read_text())
        assert [r["k_test"] for r in result["results"]] == [1, 2]
        runs.append(str(run))
    args = parse("report", *runs, "--out", str(tmp_path / "report"))
    assert args.func(args) == 0
    table = (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "accuracy_vs_k.png").stat().st_size > 1000
    header = next(line for line in table.splitlines() if line.startswith("| K_test"))
    assert header.count("|") == 4  # K_test + two groups: the seeds of a are one group
    assert "a1, a2" in table and "(2 seeds)" in table
