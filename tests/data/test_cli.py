from fwp.cli import main
from tests.data.trees import make_omniglot


def test_inspect_glyphs_prints_splits_and_writes_a_picture(tmp_path, capsys):
    out = tmp_path / "episode.png"
    code = main(
        [
            "fewshot",
            "inspect",
            "--dataset",
            "glyphs",
            "--data-option",
            "samples_per_class=2",
            "--n-way",
            "3",
            "--k-shot",
            "1",
            "--n-query",
            "1",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and out.stat().st_size > 1000
    for split in ("train", "val", "test"):
        assert f"  {split}" in printed
    assert "classes" in printed and "label 2:" in printed


def test_inspect_omniglot_with_a_missing_split(tmp_path, capsys):
    make_omniglot(tmp_path, "images_evaluation", {"Omega": 3})
    code = main(
        [
            "fewshot",
            "inspect",
            "--dataset",
            "omniglot",
            "--data-root",
            str(tmp_path),
            "--split",
            "test",
            "--n-way",
            "2",
            "--k-shot",
            "2",
            "--n-query",
            "1",
            "--out",
            str(tmp_path / "e.png"),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "train  unavailable" in printed and "test   3 classes, 9 images" in printed


def test_inspect_errors_are_clear(tmp_path, capsys):
    code = main(
        ["fewshot", "inspect", "--dataset", "omniglot", "--data-root", str(tmp_path / "nowhere")]
    )
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = main(
        [
            "fewshot",
            "inspect",
            "--dataset",
            "glyphs",
            "--data-option",
            "samples_per_class=2",
            "--k-shot",
            "5",
            "--n-query",
            "1",
            "--out",
            str(tmp_path / "x.png"),
        ]
    )
    assert code == 2 and "K + K' + Q = 6" in capsys.readouterr().err
