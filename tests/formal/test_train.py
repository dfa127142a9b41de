import json
import os

import pytest
import torch

from fwp.cli import main
from fwp.errors import UserError
from fwp.formal.config import ModelConfig, RunConfig
from fwp.formal.data import encode
from fwp.formal.languages import LANGUAGES
from fwp.formal.model import FormalModel, available_models
from fwp.formal.train import evaluate, load_model, train

TINY = ["--layers", "1", "--d-model", "8", "--heads", "2", "--d-ff", "16",
        "--eval-size", "20", "--train-bin", "1-12", "--bins", "1-12", "13-20",
        "--batch-size", "4", "--train-size", "12", "--valid-size", "10", "--epochs", "1"]


def tiny(model="lstm", language="parity", **overrides):
    """The published protocol on small fixed sets: 8 training strings, 2 steps per epoch."""
    config = RunConfig(
        language=language,
        network=ModelConfig(model=model, layers=1, d_model=8, heads=2, d_ff=16),
        train_bin="1-12", bins=["1-12", "13-20"], eval_size=20, batch_size=4,
        train_size=8, valid_size=10, epochs=2, eval_every=2,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


@pytest.mark.parametrize("model", available_models())
def test_every_registered_layer_trains_and_is_causal(model):
    language = LANGUAGES["dyck-1"]
    net = FormalModel(language, tiny(model).network)
    batch = encode(language, ["(())()", "()"])
    logits = net(batch.tokens)
    assert logits.shape == (2, 6, 3)
    # Right padding must not change the real positions of the short string.
    alone = net(encode(language, ["()"]).tokens)
    torch.testing.assert_close(logits[1, :2], alone[0], rtol=1e-4, atol=1e-5)
    metrics = train(tiny(model, "dyck-1", epochs=1), log=None)
    assert set(metrics["bins"]) == {"1-12", "13-20"} and metrics["steps_run"] == 2


def test_lstm_learns_abab_star_and_stops_early():
    config = tiny("lstm", "abab-star", train_size=64, epochs=50, eval_every=10, lr=1e-2,
                  batch_size=8, stop_after_perfect=1)
    config.network.d_model = 16
    metrics = train(config, log=None)
    assert metrics["bins"]["1-12"]["seq_acc"] == 100.0
    assert metrics["steps_run"] < 400
    assert metrics["history"][-1]["valid_seq_acc"] == 100.0
    assert metrics["selection"]["rule"] == "validation" and metrics["runtime"]["threads"] >= 1


def test_evaluate_counts_a_sequence_right_only_if_every_position_is():
    language = LANGUAGES["counter-2"]

    class Oracle(torch.nn.Module):
        def __init__(self, flip_at=None):
            super().__init__()
            self.flip_at = flip_at
            self.training = False

        def forward(self, tokens):
            strings = ["".join("ab"[i] for i in row if i < 2) for row in tokens.tolist()]
            logits = encode(language, strings).targets * 20 - 10
            if self.flip_at is not None:
                logits[0, self.flip_at, 0] *= -1
            return logits

    strings = ["aabb", "ab"]
    assert evaluate(Oracle(), language, strings)["seq_acc"] == 100.0
    # Batches are sorted by length: row 0 is "ab"; one wrong bit fails that one sequence.
    wrong = evaluate(Oracle(flip_at=1), language, strings)
    assert wrong["seq_acc"] == 50.0 and wrong["pos_acc"] == pytest.approx(500 / 6)


def test_resume_gives_the_same_run_as_no_interruption(tmp_path):
    config = tiny(epochs=3, eval_every=2, stop_after_perfect=0)
    straight = train(config, tmp_path / "a", log=None)

    class Stop(Exception):
        pass

    def crash(message):
        if message.startswith("step 4"):
            raise Stop

    with pytest.raises(Stop):
        train(config, tmp_path / "b", log=crash)
    assert not (tmp_path / "b" / "metrics.json").exists()
    messages = []
    resumed = train(config, tmp_path / "b", log=messages.append)
    assert any("resuming at step 2" in m for m in messages)
    assert resumed["bins"] == straight["bins"]
    assert resumed["steps_run"] == 6
    assert not [p for p in os.listdir(tmp_path / "b") if p.endswith(".tmp")]


def test_nan_loss_is_a_user_error():
    with pytest.raises(UserError, match="lower --lr"):
        train(tiny(lr=float("inf"), grad_clip=0.0), log=None)


def test_cli_train_eval_and_errors(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["formal", "train", "--language", "counter-2", "--model", "lstm",
                 "--eval-every", "3", "--out", str(run), *TINY]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["network"]["d_model"] == 8 and config["language"] == "counter-2"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps_run"] == 3 and set(metrics["bins"]) == {"1-12", "13-20"}
    assert "| 13-20 |" in capsys.readouterr().out

    assert main(["formal", "eval", str(run), "--bins", "30-40", "--eval-size", "5"]) == 0
    assert "| 30-40 |" in capsys.readouterr().out
    assert set(json.loads((run / "eval.json").read_text())["bins"]) == {"30-40"}
    assert load_model(run)[0].language == "counter-2"

    # Same folder, different config: refused with the fields that differ.
    assert main(["formal", "train", "--language", "counter-2", "--model", "lstm",
                 "--out", str(run), *TINY, "--d-ff", "32"]) == 2
    assert "cannot change --d-ff 16 → 32" in capsys.readouterr().err
    assert main(["formal", "train", "--model", "no-such-layer", "--out",
                 str(tmp_path / "x"), *TINY]) == 2
    assert "unknown --model 'no-such-layer'" in capsys.readouterr().err
    assert main(["formal", "train", "--out", str(tmp_path / "z"), *TINY, "--bins", "9-3"]) == 2
    assert "LO <= HI" in capsys.readouterr().err
    assert main(["formal", "eval", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_cli_config_file_and_flag_precedence(tmp_path):
    preset = tmp_path / "preset.json"
    preset.write_text(json.dumps({"lr": 0.005, "network": {"d_model": 12, "heads": 3}}))
    run = tmp_path / "run"
    assert main(["formal", "train", "--config", str(preset), "--epochs", "1", "--out", str(run),
                 "--train-size", "8", "--valid-size", "5", "--eval-size", "5", "--d-ff", "8",
                 "--layers", "1", "--heads", "4"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["lr"] == 0.005 and config["network"]["d_model"] == 12
    assert config["network"]["heads"] == 4  # the flag beats the file
    preset.write_text(json.dumps({"learning_rate": 1}))
    assert main(["formal", "train", "--config", str(preset), "--out", str(tmp_path / "y")]) == 2


@pytest.mark.slow
def test_cli_sweep_is_resumable_and_reports(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["formal", "sweep", str(out), "--languages", "parity", "dyck-1", "--models", "lstm",
            "linear", "--eval-every", "2", *TINY]
    assert main(argv) == 0
    text = (out / "report.md").read_text()
    assert "| lstm |" in text and "| linear |" in text and "bin 13-20" in text
    assert "| model | parity | dyck-1 |" in text and "4 of 4 runs finished" in text
    assert "lr 0.001, layers 1 (one setting, no search)" in text and "Chosen" not in text
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    cell = out / "runs" / "dyck-1" / "linear" / "lr0.001-l1" / "s1" / "metrics.json"
    before = cell.stat().st_mtime_ns
    assert main(argv) == 0
    assert cell.stat().st_mtime_ns == before  # finished runs are skipped
    capsys.readouterr()
    assert main([*argv, "--epochs", "2", "--jobs", "2"]) == 2
    assert "another base config" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["formal", "report", str(out)]) == 0
    assert "| lstm |" in capsys.readouterr().out
    assert main(["formal", "sweep", str(out), "--languages", "parity", "--models", "nope"]) == 2
    assert main(["formal", "report", str(tmp_path)]) == 2


def test_cli_languages_lists_all(capsys):
    assert main(["formal", "languages"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in LANGUAGES)


def test_sweep_goes_on_past_a_failing_cell(tmp_path, monkeypatch, capsys):
    import fwp.formal.sweep as sweep_module

    real_train = sweep_module.train

    def flaky(config, out, log, data_cache=None):
        if config.language == "dyck-1":
            raise UserError("training loss became nan")
        return real_train(config, out, log, data_cache)

    monkeypatch.setattr(sweep_module, "train", flaky)
    out = tmp_path / "sweep"
    assert main(["formal", "sweep", str(out), "--languages", "dyck-1", "parity", "--models",
                 "lstm", *TINY]) == 0
    assert "failed: training loss became nan" in (
        out / "runs" / "dyck-1" / "lstm" / "lr0.001-l1" / "s1" / "train.log").read_text()
    assert "| lstm | — |" in (out / "report.md").read_text()
    assert "dyck-1/lstm/lr0.001-l1/s1: failed" in capsys.readouterr().out


def test_sweep_puts_the_signal_handlers_back(tmp_path, monkeypatch):
    import signal

    import fwp.formal.sweep as sweep_module

    def refuse(*args, **kwargs):
        raise UserError("refused for the test")

    monkeypatch.setattr(sweep_module, "run_plans", refuse)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    assert main(["formal", "sweep", str(tmp_path / "sweep"), "--languages", "parity", "--models",
                 "lstm", *TINY]) == 2
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_cli_layer_options_reach_the_layer(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["formal", "train", "--model", "srwm", "--options", '{"n_beta": 4}',
                 "--out", str(run), *TINY]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["network"]["layer_options"] == {"n_beta": 4}
    assert main(["formal", "train", "--model", "lstm", "--options", '{"no_such": 1}',
                 "--out", str(tmp_path / "bad"), *TINY]) == 2
    assert "no_such" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["formal", "train", "--options", "[1]"])


def test_validation_selection_never_reads_the_test_bins(monkeypatch):
    """Poisoned test sets: the validation rule trains to the end and selects without them
    (they are read only for the final report); the published rule reads them at once."""
    from fwp.formal import data as data_module

    reads = []

    def poisoned(self, bin_):
        reads.append(bin_)
        raise RuntimeError(f"test bin {bin_} read")

    monkeypatch.setattr(data_module.DataSets, "test", poisoned)
    logs = []
    config = tiny(epochs=3, eval_every=2, stop_after_perfect=0)
    with pytest.raises(RuntimeError, match="test bin"):
        train(config, log=logs.append)
    steps = [m.split("/")[0] for m in logs if m.startswith("step ")]
    assert steps == ["step 2", "step 4", "step 6"]
    assert len(reads) == 1  # the final report, after the last step
    reads.clear()
    with pytest.raises(RuntimeError, match="test bin"):
        train(tiny(epochs=3, eval_every=2, selection="published"), log=logs.append)
    assert len(reads) == 1 and not any(m.startswith("step 2") for m in logs[4:])


def test_validation_selection_is_the_same_whatever_the_test_bins():
    a = train(tiny(epochs=3, stop_after_perfect=0), log=None)
    b = train(tiny(epochs=3, stop_after_perfect=0, bins=["30-40"]), log=None)
    assert a["history"] == [{**h, "seconds": a["history"][i]["seconds"]}
                            for i, h in enumerate(b["history"])]
    assert a["selection"] == b["selection"] and a["valid"] == b["valid"]


def test_published_selection_keeps_the_best_mean_over_the_test_bins():
    metrics = train(tiny(epochs=4, eval_every=1, stop_after_perfect=0, selection="published",
                         lr=3e-2), log=None)
    scores = [h["score"] for h in metrics["history"]]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    assert metrics["selection"]["step"] == metrics["history"][best]["step"]
    mean = sum(metrics["bins"][b]["seq_acc"] for b in ("1-12", "13-20")) / 2
    assert metrics["selection"]["score"] == pytest.approx(mean)


def test_stream_protocol_still_trains_and_resumes(tmp_path):
    config = tiny(protocol="stream", steps=4, eval_every=2, stop_after_perfect=0)
    metrics = train(config, tmp_path / "run", log=None)
    assert metrics["steps_run"] == 4 and metrics["protocol"] == "stream"


def test_published_optimiser_and_srwm_settings():
    config = tiny("srwm")
    net = FormalModel(LANGUAGES["parity"], config.network)
    block = net.stack.blocks[0]
    assert block.residual == "normed_skip" and block.layer.n_beta == 4
    W0, D = block.layer.W0.detach(), block.layer.head_dim
    assert W0[:, 2 * D : 3 * D].std() < 0.05 * W0[:, :D].std()  # query block 0.01/√D
    assert abs(W0[:, -4:].mean() + 1.0) < 0.5  # β init −1
    config.network.layer_defaults, config.network.residual = "none", "pre_norm"
    plain = FormalModel(LANGUAGES["parity"], config.network).stack.blocks[0]
    assert plain.residual == "pre_norm" and plain.layer.n_beta == 1
    assert RunConfig().adam_betas == [0.9, 0.995] and RunConfig().adam_eps == 1e-9
    assert RunConfig().grad_clip == 0.0 and RunConfig().protocol == "published"
    with pytest.raises(UserError, match="selection"):
        tiny(selection="best").validate()


def test_sweep_search_picks_on_validation_then_runs_the_other_seeds(tmp_path, capsys):
    from fwp.formal.sweep import ModelSpec

    spec = ModelSpec.parse("neg=deltanet:allow_negative_eigenvalues=true,feature_map=l2")
    assert (spec.label, spec.layer) == ("neg", "deltanet")
    assert spec.options == {"allow_negative_eigenvalues": True, "feature_map": "l2"}
    assert ModelSpec.parse("lstm") == ModelSpec("lstm", "lstm")
    out = tmp_path / "sweep"
    argv = ["formal", "sweep", str(out), "--languages", "parity", "--models", "lstm",
            spec_text(), "--seeds", "1", "2", "--search-lr", "1e-3", "3e-2", *TINY]
    assert main(argv) == 0
    info = json.loads((out / "sweep.json").read_text())
    runs = sorted(p.parent.relative_to(out / "runs").as_posix()
                  for p in (out / "runs").glob("*/*/*/s*/metrics.json"))
    for model in ("lstm", "neg"):
        chosen = info["chosen"][f"parity/{model}"]
        name = f"lr{chosen['lr']:g}-l1"
        assert f"parity/{model}/{name}/s2" in runs
        assert sum(r.startswith(f"parity/{model}/") for r in runs) == 3  # 2 searched + 1 seed
        valid = {lr: json.loads((out / "runs" / "parity" / model / f"lr{lr:g}-l1" / "s1" /
                                 "metrics.json").read_text())["valid"] for lr in (1e-3, 3e-2)}
        best = max(valid, key=lambda lr: (valid[lr]["seq_acc"], -valid[lr]["loss"]))
        assert chosen["lr"] == best
    report = (out / "report.md").read_text()
    assert "6 of 6 runs finished" in report and "search on validation" in report
    assert "Chosen configuration per cell" in report
    capsys.readouterr()


def test_without_a_choice_every_seed_goes_to_the_workers_at_once(tmp_path, monkeypatch):
    import fwp.formal.sweep as sweeping

    calls = []
    monkeypatch.setattr(sweeping, "run_all", lambda todo, *args: calls.append(len(todo)))
    monkeypatch.setattr(sweeping, "write_report", lambda out: (out / "report.md", ""))
    base = ["formal", "sweep", "--languages", "parity", "--models", "lstm", "srwm",
            "--seeds", "1", "2", "3", *TINY]
    assert main([*base[:2], str(tmp_path / "one"), *base[2:]]) == 0
    assert calls == [6]  # one pool: 2 models × 3 seeds, no wait for a search
    calls.clear()
    assert main([*base[:2], str(tmp_path / "two"), *base[2:], "--search-lr", "1e-3", "3e-3"]) == 0
    assert calls == [4, 0]  # the search first (2 models × 2 rates); its choice found no run
    calls.clear()
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    assert main(["formal", "sweep", str(tmp_path / "parts"), "--grid", str(grid)]) == 0
    assert calls == [6]  # both parts in one pool: 1 + 2 languages × 2 models


def spec_text():
    return "neg=deltanet:allow_negative_eigenvalues=true,feature_map=l2"


def test_a_run_records_its_thread_count_and_operator_path(tmp_path):
    metrics = train(tiny("srwm", "parity", epochs=1, threads=1), tmp_path / "run", log=None)
    assert metrics["runtime"]["threads"] == 1 and "srwm" in metrics["runtime"]["operators"]
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert saved["runtime"] == metrics["runtime"]


@pytest.mark.slow
def test_a_stopped_sweep_records_its_wall_time(tmp_path):
    """SIGTERM (as at the end of a session) stops the sweep cleanly: exit 143, sweep.json with
    the wall time so far, the run's checkpoint left to resume from."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "fwp", "formal", "sweep", str(out), "--languages", "parity",
            "--models", "lstm", *TINY, "--epochs", "1000", "--eval-every", "1"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "runs" / "parity" / "lstm" / "lr0.001-l1" / "s1" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    info = json.loads((out / "sweep.json").read_text())
    assert info["wall_seconds"] > 0 and checkpoint.exists()


GRID = """
models = ["lstm", "lin=linear"]
seeds = [1]
reference = "lstm"
[set]
layers = 1
d_model = 8
heads = 2
d_ff = 16
eval_size = 10
batch_size = 4
train_size = 12
valid_size = 8
epochs = 1
[parts.short]
languages = ["parity"]
set = { train_bin = "1-8", bins = ["1-8"] }
[parts.long]
languages = ["parity", "dyck-1"]
set = { train_bin = "9-16", bins = ["9-16"] }
"""


def test_a_grid_with_parts_sweeps_each_into_its_folder_and_joins_the_reports(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    out = tmp_path / "sweep"
    assert main(["formal", "sweep", str(out), "--grid", str(grid), "--eval-every", "2"]) == 0
    for part, languages in [("short", ["parity"]), ("long", ["parity", "dyck-1"])]:
        info = json.loads((out / part / "sweep.json").read_text())
        assert info["languages"] == languages and list(info["models"]) == ["lstm", "lin"]
        assert info["base"]["train_bin"] == ("1-8" if part == "short" else "9-16")
        assert info["base"]["network"]["d_model"] == 8  # the shared [set]
        assert info["base"]["eval_every"] == 2  # a flag goes over the grid
        assert (out / part / "heatmap.png").is_file()
        assert info["wall_shared_by"] == ["short", "long"]  # one pool for both parts
    report = (out / "report.md").read_text()
    assert report.index("## short") < report.index("## long")  # the grid's order
    assert "(of the parts short, long, run in one pool)" in report
    assert "bin 1-8" in report and "bin 9-16" in report and "| lin |" in report
    assert "![long](long/heatmap.png)" in report
    # one table of comparisons with the grid's reference, over both parts (one Holm family)
    comparisons = report[report.index("## Comparisons"):]
    for row in ("| short | parity | 1-8 | sequences | lin | lstm |",
                "| long | parity | 9-16 | sequences | lin | lstm |",
                "| long | dyck-1 | 9-16 | sequences | lin | lstm |"):
        assert row in comparisons
    assert "Each model against" not in (out / "short" / "report.md").read_text()
    assert "in the grid's report" in (out / "short" / "report.md").read_text()
    capsys.readouterr()
    assert main(["formal", "report", str(out)]) == 0
    assert "## short" in capsys.readouterr().out
    # the same command resumes (nothing to train); a changed setting is refused before any work
    assert main(["formal", "sweep", str(out), "--grid", str(grid), "--eval-every", "2"]) == 0
    assert main(["formal", "sweep", str(out), "--grid", str(grid), "--eval-every", "3"]) == 2
    assert "another base config" in capsys.readouterr().err
    # a sweep without parts into the same folder is refused (its report would hide it)
    assert main(["formal", "sweep", str(out), "--languages", "parity", "--models", "lstm"]) == 2
    assert "holds a grid's parts; a sweep without parts goes into a new folder" in (
        capsys.readouterr().err)


@pytest.mark.parametrize(("text", "flags", "message"), [
    (GRID, ["--models", "lstm"], "--models with --grid: the grid names the languages"),
    (GRID.replace("[set]", "[set]\nlanguage = 'parity'"), [], "'language' in a set table"),
    (GRID.replace("[set]", "[set]\nwidth = 3"), [], "grid \\[set\\]: 'width' is not a field"),
    (GRID.replace("seeds = [1]", "seeds = [1]\nlanguages = ['parity']"), [],
     "languages go in each \\[parts.NAME\\]"),
    (GRID + "[parts.x]\nlanguages = ['nope']\n", [], "unknown language or task 'nope'"),
    (GRID + "[parts.y]\nlanguages = ['parity']\nbins = ['1-2']\n", [],
     "\\[parts.y\\] takes languages and set, not \\['bins'\\]"),
    ("model = ['lstm']\n", [], "unknown keys \\['model'\\]"),
    (GRID, ["--reference", "gru"], "reference model 'gru' is not one of the sweep's models "
     "\\(lstm, lin\\)"),
])
def test_a_bad_grid_is_one_line_before_any_work(tmp_path, capsys, text, flags, message):
    import re

    grid = tmp_path / "grid.toml"
    grid.write_text(text)
    out = tmp_path / "sweep"
    assert main(["formal", "sweep", str(out), "--grid", str(grid), *flags]) == 2
    error = capsys.readouterr().err.strip()
    assert re.search(message, error) and "\n" not in error, error
    assert not out.exists()


def test_a_sweep_without_grid_needs_languages_and_models(tmp_path, capsys):
    assert main(["formal", "sweep", str(tmp_path / "s"), "--languages", "parity"]) == 2
    assert "needs --grid, or --languages and --models (missing --models)" in (
        capsys.readouterr().err)
    assert main(["formal", "sweep", str(tmp_path / "s"), "--grid", "nope"]) == 2
    assert "one of ['algorithmic']" in capsys.readouterr().err


def test_the_algorithmic_grid_is_the_documented_study():
    from fwp.formal.sweep import grid_parts, read_grid

    parts = grid_parts(read_grid("algorithmic"))
    assert [(p.name, p.languages) for p in parts] == [
        ("code", ["code-exec-3", "code-exec-5"]), ("listops10", ["listops"]),
        ("listops15", ["listops"])]
    assert all(len(p.models) == 10 and p.seeds == [1, 2, 3] for p in parts)


def test_report_std_over_seeds_is_the_sample_std():
    from fwp.formal.report import accuracy_grid

    runs = [{"bins": {"1-5": {"seq_acc": v}}} for v in (0.0, 50.0, 100.0)]
    mean, std, count = accuracy_grid(["parity"], ["lstm"], "1-5", {("parity", "lstm"): runs})
    assert (mean[0, 0], std[0, 0], count[0, 0]) == (50.0, 50.0, 3)  # n − 1, as every report
    _, std, _ = accuracy_grid(["parity"], ["lstm"], "1-5", {("parity", "lstm"): runs[:1]})
    assert std[0, 0] == 0.0


def _fake_run(folder, seed, model, values):
    run = folder / "runs" / "code-exec-3" / model / "lr0.001-l2" / f"s{seed}"
    run.mkdir(parents=True)
    bins = {"20-20": {"seq_acc": 0.0, "pos_acc": 50.0, "answer_acc": values[seed]}}
    (run / "metrics.json").write_text(json.dumps({"bins": bins, "train_seconds": 1.0}))


def test_report_compares_each_model_with_the_reference_paired_by_seed(tmp_path, capsys):
    from fwp.formal.report import comparisons
    from fwp.stats import holm

    sweep = tmp_path / "s"
    lstm, good = {1: 30.0, 2: 40.0, 3: 35.0}, {1: 40.0, 2: 51.0, 3: 44.0}
    same = {1: 31.0, 2: 38.0, 3: 36.0}
    for seed in (1, 2, 3):
        for model, values in (("lstm", lstm), ("mesa", good), ("srwm", same)):
            _fake_run(sweep, seed, model, values)
    (sweep / "sweep.json").write_text(json.dumps({"models": {"lstm": {}, "mesa": {}, "srwm": {}},
                                                  "seeds": [1, 2, 3]}))
    assert comparisons(sweep) == []  # no reference named: no comparisons
    rows = comparisons(sweep, "lstm")
    assert [(r.model, r.metric) for r in rows] == [("mesa", "answer_acc"), ("srwm", "answer_acc")]
    mesa, srwm = (r.difference for r in rows)
    assert mesa.per_seed == (10.0, 11.0, 9.0) and mesa.over_seeds.mean == 10.0
    # paired t with sd 1 over 3 seeds: t = 10 / (1 / √3) = 17.32, df 2 → p = 0.00332
    assert abs(mesa.p_value - 0.003317) < 1e-5
    assert srwm.per_seed == (1.0, -2.0, 1.0)
    assert main(["formal", "report", str(sweep), "--reference", "lstm"]) == 0
    report = (sweep / "report.md").read_text()
    holm_p = holm([mesa.p_value, srwm.p_value])
    assert (f"| code-exec-3 | 20-20 | answers | mesa | lstm | 1: +10.0, 2: +11.0, 3: +9.0 | "
            f"+10.0 | [+7.5, +12.5] | 0.00332 | {holm_p[0]:.3g} | gain | 4 |") in report
    assert "| srwm | lstm |" in report and "no detectable difference" in report
    capsys.readouterr()
    assert main(["formal", "report", str(sweep), "--reference", "gru"]) == 2
    error = capsys.readouterr().err.strip()
    assert "reference model 'gru' is not a model of" in error and "\n" not in error
