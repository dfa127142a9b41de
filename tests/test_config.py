"""The configuration core: schemas, layering, the KEY=VALUE grammar, files and flags."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import pytest

from fwp import config as core
from fwp.cli import build_parser
from fwp.config import option, section
from fwp.errors import UserError


@dataclass
class Inner:
    width: int = option(4, "a width")
    kind: str = option("b", "a kind", choices=("a", "b"))
    options: dict = option({}, "options", flag="option")


@dataclass
class Outer:
    inner: Inner = section(Inner)
    rate: float = option(0.5, "a rate")
    flag: bool = option(False, "a switch")
    bins: list[str] = option(["1-2"], "bins")


def parser_for(cls: type) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    core.add_flags(parser, cls)
    return parser


def test_layers_last_one_wins_and_option_tables_merge_by_key():
    config = core.resolve(Outer, [
        ("a file", {"rate": 1, "inner": {"width": 8, "options": {"x": 1, "y": 2}}}),
        ("absent", None),
        ("flags", {"inner": {"options": {"y": 3}}, "bins": ["3-4", "5-6"]}),
    ])
    assert config.rate == 1.0 and isinstance(config.rate, float)
    assert config.inner.width == 8 and config.inner.options == {"x": 1, "y": 3}
    assert config.bins == ["3-4", "5-6"]
    assert Outer().inner.options is not Outer().inner.options  # defaults are copied


@pytest.mark.parametrize("data, message", [
    ({"nope": 1}, "unknown field 'nope' in here; known: inner, rate"),
    ({"inner": 3}, "must be a section"),
    ({"inner": {"width": "4"}}, "width needs an int"),
    ({"flag": 1}, "flag needs a bool"),
    ({"bins": "1-2"}, "needs a list of str"),
    ({"inner": {"options": [1]}}, "needs a table of options"),
])
def test_bad_values_name_the_field(data, message):
    with pytest.raises(UserError, match=message):
        core.from_dict(Outer, data, "here")


@pytest.mark.parametrize("text, parsed", [
    ("rotations=true", {"rotations": True}),
    ("rotations=True", {"rotations": True}),
    ("image_size=28", {"image_size": 28}),
    ("scale=0.5", {"scale": 0.5}),
    ("split_scheme=vinyals", {"split_scheme": "vinyals"}),
    ('name="a b"', {"name": "a b"}),
    ("sizes=[1, 2]", {"sizes": [1, 2]}),
    ('{"n_beta": 4, "x": true}', {"n_beta": 4, "x": True}),
])
def test_one_key_value_grammar(text, parsed):
    assert core.parse_options(text) == parsed


@pytest.mark.parametrize("text", ["novalue", "=3", "[1]"])
def test_malformed_options_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        core.parse_options(text)


def test_flags_given_are_the_only_overrides(capsys):
    parser = parser_for(Outer)
    args = parser.parse_args(["--width", "6", "--option", "a=1", "--option", "b=x", "--flag"])
    assert core.given(args, Outer) == {
        "inner": {"width": 6, "options": {"a": 1, "b": "x"}}, "flag": True,
    }
    assert core.given(parser.parse_args([]), Outer) == {}
    with pytest.raises(SystemExit):
        parser.parse_args(["--width", "six"])
    assert "not an int: 'six'" in capsys.readouterr().err


def test_help_lists_choices_and_defaults():
    text = parser_for(Outer).format_help()
    assert "a kind; one of: a, b (default: 'b')" in " ".join(text.split())
    assert "inner options" in text and "run options" in text


def test_check_choices_names_the_flag():
    config = Outer()
    config.inner.kind = "c"
    with pytest.raises(UserError, match="unknown --kind 'c'; choose one of a, b"):
        core.check_choices(config)
    core.check_choices(config, skip=("kind",))


def test_files_toml_json_and_base_presets(tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "start.toml").write_text('rate = 2.0\n[inner]\noptions = { x = 1 }\n')
    (tmp_path / "mine.toml").write_text('base = "start"\n[inner]\nwidth = 3\noptions = { y = 2 }\n')
    data = core.read_file(tmp_path / "mine.toml", presets, Outer)
    assert data == {"rate": 2.0, "inner": {"width": 3, "options": {"x": 1, "y": 2}}}
    (tmp_path / "mine.json").write_text(json.dumps({"rate": 3}))
    assert core.read_file(tmp_path / "mine.json") == {"rate": 3}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="bad.json is not valid json"):
        core.read_file(tmp_path / "bad.json")
    with pytest.raises(UserError, match="does not exist"):
        core.read_file(tmp_path / "missing.toml")
    (tmp_path / "other.toml").write_text('base = "nope"\n')
    with pytest.raises(UserError, match="unknown preset 'nope'; choose one of start"):
        core.read_file(tmp_path / "other.toml", presets, Outer)


def test_write_atomic_leaves_no_temporary_file(tmp_path):
    core.write_atomic(tmp_path / "a.json", {"x": 1})
    core.write_atomic(tmp_path / "b.txt", "text")
    core.write_atomic(tmp_path / "c.bin", b"\x00\x01")
    core.write_atomic(tmp_path / "d.pt", {"t": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert (tmp_path / "b.txt").read_text() == "text"
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.txt", "c.bin", "d.pt"]


def _help(*argv: str) -> str:
    parser = build_parser()
    for action in parser._subparsers._group_actions:  # the workflow's, then the command's parser
        parser = action.choices[argv[0]]
    for action in parser._subparsers._group_actions:
        parser = action.choices[argv[1]]
    return " ".join(parser.format_help().split())


def test_every_workflow_flag_lists_its_choices_from_the_registries():
    from fwp.data import DATASETS
    from fwp.fewshot.backbones import BACKBONES
    from fwp.formal.languages import LANGUAGES
    from fwp.layers import LAYERS

    layers = ", ".join(LAYERS)
    formal = _help("formal", "train")
    assert f"one of: {', '.join(LANGUAGES)}" in formal and f"one of: {layers}" in formal
    fewshot = _help("fewshot", "train")
    assert f"one of: {', '.join(DATASETS)}" in fewshot and f"one of: {layers}" in fewshot
    assert f"one of: {', '.join(BACKBONES)}" in fewshot
    assert f"one of: {', '.join(DATASETS)}" in _help("fewshot", "inspect")
    sweep = _help("formal", "sweep")
    assert ", ".join(LANGUAGES) in sweep and layers in sweep


def test_a_renamed_field_is_read_from_an_older_file_under_its_old_name():
    from fwp.formal.config import from_dict

    config = from_dict({"network": {"options": {"n_beta": 4}}})
    assert config.network.layer_options == {"n_beta": 4}
