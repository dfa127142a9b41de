"""The command line: flags from the config fields, presets, clear errors, eval and report."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from fwp.config import leaves, parse_value, to_dict
from fwp.errors import UserError
from fwp.fewshot.cli import register
from fwp.fewshot.config import RunConfig, config_from_args, preset_names
from fwp.layers.registry import LAYERS


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fwp fewshot")
    register(parser.add_subparsers())
    return parser.parse_args(list(argv))


def test_every_config_field_is_a_flag():
    args = parse("train", "--out", "x")
    for path, _, _ in leaves(RunConfig):
        assert hasattr(args, path[-1]), path


@pytest.mark.parametrize("name", preset_names())
def test_presets_are_valid(name):
    config = config_from_args(parse("train", "--preset", name, "--out", "x"))
    config.validate()
    assert config.network.model in LAYERS
    if name.startswith(("table", "omniglot", "demo", "continual")):
        assert config.network.model == "srwm"  # the papers' learner
    if name.endswith("_boot"):
        assert config.loss.beta2 > 0 and config.data.k_extra > 0


DOCS = Path(__file__).parents[2] / "docs" / "fewshot.md"
PAPER_PRESETS = [n for n in preset_names() if n.startswith(("table1_", "table2_", "omniglot_"))]


def _docs_table(header_start: str) -> list[list[str]]:
    """Rows (cells stripped) of the markdown table in docs/fewshot.md whose header row starts
    with ``header_start``; the header is row 0."""
    lines = DOCS.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return [rows[0], *rows[2:]]


def _value(cell: str):
    match = re.fullmatch(r"`(.+)`", cell)
    assert match, f"not a `value` cell: {cell!r}"
    return parse_value(match[1])


def _flat(config) -> dict:
    flat = {}
    for path, _, _ in leaves(RunConfig):
        value = to_dict(config)
        for key in path:
            value = value[key]
        flat[path[-1]] = value
    return flat


def test_paper_presets_match_the_docs_tables():
    """Each paper preset resolves to the values in docs/fewshot.md: the common table (field in
    brackets in column 1, value in column 4) and its row of the per-preset table."""
    common = {re.search(r"\(`(\w+)`\)", row[0])[1]: _value(row[3])
              for row in _docs_table("| hyper-parameter (field)")[1:]}
    header, *rows = _docs_table("| preset |")
    fields = [name.strip("`") for name in header[2:]]
    per_preset = {row[0].strip("`"): dict(zip(fields, map(_value, row[2:]))) for row in rows}
    assert sorted(per_preset) == sorted(PAPER_PRESETS)
    for name in PAPER_PRESETS:
        flat = _flat(config_from_args(parse("train", "--preset", name, "--out", "x")))
        expected = {**common, **per_preset[name]}
        assert {k: flat[k] for k in expected} == expected, name


def test_paper_presets_are_the_public_model():
    for name in PAPER_PRESETS:
        net = config_from_args(parse("train", "--preset", name, "--out", "x")).network
        assert (net.residual, net.final_norm, net.n_beta, net.key_identity) == (
            "normed_skip", False, 4, 0.0), name


def test_flags_override_presets_and_config_files(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('base = "demo"\nsteps = 7\n[network]\nlayers = 1\n')
    config = config_from_args(parse(
        "train", "--config", str(path), "--layers", "3", "--beta2", "2", "--distill", "kl",
        "--data-option", "image_size=32", "--no-amp", "--layer-option", "init_std=0.05",
        "--layer-option", '{"mode": "recurrent"}', "--out", "x",
    ))
    assert (config.steps, config.network.layers, config.loss.beta2) == (7, 3, 2.0)
    assert config.loss.distill == "kl" and config.amp is False
    assert config.data.data_options == {"image_size": 32}
    assert config.network.layer_options == {"init_std": 0.05, "mode": "recurrent"}


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
    (("--model", "deltanet", "--feature-map", "relu"), "unknown --feature-map 'relu'"),
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


@pytest.mark.slow
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
        repeats = ["--repeats", "3"] if name == "b1" else []
        args = parse("eval", str(run), "--k-test", "1", "2", "--episodes", "6", *repeats)
        assert args.func(args) == 0
        result = json.loads((run / "eval_test.json").read_text())
        assert [r["k_test"] for r in result["results"]] == [1, 2]
        assert result["repeats"] == (3 if repeats else 1)
        runs.append(str(run))
    args = parse("report", *runs, "--out", str(tmp_path / "report"))
    assert args.func(args) == 0
    table = (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "accuracy_vs_k.png").stat().st_size > 1000
    header = next(line for line in table.splitlines() if line.startswith("| K_test"))
    assert header.count("|") == 4  # K_test + two groups: the seeds of a are one group
    assert "a1, a2" in table and "(2 seeds)" in table
    assert "| std over 2 seeds |" in table and "| std over 3 repeats |" in table
    assert "over 3 repeats" in capsys.readouterr().out
