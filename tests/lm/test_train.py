"""Training runs: the run folder, exact resume, refusals, and the eval / generate commands."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from fwp.cli import main
from fwp.errors import RunStopped, UserError
from fwp.lm.config import LMConfig, ModelConfig
from fwp.lm.train import load_run, schedule, train

TEXT = "".join(f"def f{i}(x):\n    return x * {i % 7} + {i % 3}\n\n" for i in range(300))


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("FWP_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "code.txt"
    path.write_text(TEXT)
    return path


def tiny(data, **fields) -> LMConfig:
    config = LMConfig(data=str(data), network=ModelConfig(layers=["deltanet", "transformer"],
                                                          d_model=16, heads=2, d_ff=32),
                      segment_len=16, batch_size=4, steps=6, eval_every=3, eval_tokens=200,
                      final_eval_tokens=300, sample_tokens=10, warmup_steps=2, lr=3e-3)
    for key, value in fields.items():
        setattr(config, key, value)
    config.validate()
    return config


def test_train_writes_the_run_and_learns(corpus, tmp_path):
    result = train(tiny(corpus, steps=30, eval_every=10), tmp_path / "run", say=lambda s: None)
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "tokenizer.json", "checkpoint.pt", "best.pt", "metrics.jsonl",
            "final.json"} <= names
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    val = [r for r in rows if r.get("split") == "val"]
    assert [r["step"] for r in val] == [10, 20, 30]
    assert val[-1]["bits_per_byte"] < val[0]["bits_per_byte"]
    assert set(result["valid"]) == {"carried", "reset"}
    lines = []
    assert train(tiny(corpus, steps=30, eval_every=10), tmp_path / "run", say=lines.append) \
        == result
    assert lines == [f"{tmp_path / 'run'}: already finished"]
    assert len(result["sample"]) > 0


def test_a_stopped_run_resumes_exactly(corpus, tmp_path):
    straight = train(tiny(corpus), tmp_path / "a", say=lambda s: None)

    def interrupt(line: str) -> None:
        if "valid" in line and "best" in line:  # at step 3: the loop stops after step 4
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(RunStopped, match="stopped at step 4"):
        train(tiny(corpus), tmp_path / "b", say=interrupt)
    lines = []
    resumed = train(tiny(corpus), tmp_path / "b", say=lines.append)
    assert any("resuming at step 4" in line for line in lines)
    assert resumed["valid"] == straight["valid"]
    _, a, _ = load_run(tmp_path / "a", "checkpoint.pt")
    _, b, _ = load_run(tmp_path / "b", "checkpoint.pt")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_resume_refuses_other_models_and_vocabularies(corpus, tmp_path):
    train(tiny(corpus, steps=3, tokenizer="chars"), tmp_path / "run", say=lambda s: None)
    with pytest.raises(UserError, match="cannot change --layers"):
        train(tiny(corpus, steps=6, tokenizer="chars", network=ModelConfig(
            layers=["lstm"], d_model=16, heads=2, d_ff=32)), tmp_path / "run")
    corpus.write_text("ωψ new characters\n" + TEXT)
    with pytest.raises(UserError, match="vocabulary mismatch"):
        train(tiny(corpus, steps=6, tokenizer="chars"), tmp_path / "run")


def test_a_context_longer_than_the_data_is_refused_before_training(corpus, tmp_path):
    with pytest.raises(UserError, match="fewer than batch size"):
        train(tiny(corpus, segment_len=100_000), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_schedule_warms_up_then_decays_to_zero():
    assert schedule(0, 4, 10) == 0.25 and schedule(3, 4, 10) == 1.0
    assert schedule(4, 4, 10) == 1.0 and schedule(10, 4, 10) == 0.0


def test_cli_train_eval_generate(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    flags = ["--data", str(corpus), "--layers", "deltanet,lstm", "--d-model", "16",
             "--heads", "2", "--d-ff", "32", "--segment-len", "16", "--batch-size", "4",
             "--steps", "4", "--eval-every", "2", "--eval-tokens", "100",
             "--final-eval-tokens", "100", "--sample-tokens", "5", "--out", str(run)]
    assert main(["lm", "train", *flags]) == 0
    assert "bits/byte" in capsys.readouterr().out
    assert main(["lm", "eval", str(run), "--split", "test", "--max-tokens", "200"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["carried"]["tokens"] == result["reset"]["tokens"] == 199
    assert main(["lm", "generate", str(run), "--prompt", "def ", "--tokens", "12",
                 "--samples", "2", "--top-k", "5"]) == 0
    out = capsys.readouterr().out
    assert out.count("def ") >= 2 and "--- sample 2" in out
    assert main(["lm", "generate", str(run), "--prompt", ""]) == 2
    assert "--prompt is empty" in capsys.readouterr().err
    assert main(["lm", "generate", str(run), "--top-p", "0"]) == 2
    assert main(["lm", "eval", str(tmp_path / "nothing")]) == 2
    assert "not an fwp lm run folder" in capsys.readouterr().err
    assert main(["lm", "train", *flags[:-1], str(tmp_path / "r2"), "--layers", "nope"]) == 2
    assert "unknown layer 'nope'" in capsys.readouterr().err


def test_flags_that_do_not_apply_are_refused(corpus):
    with pytest.raises(UserError, match="only when the state is carried"):
        tiny(corpus, carry_state=False, attention_window=32)


def test_carried_evaluation_of_a_reset_trained_model_keeps_one_segment_of_keys(
        corpus, tmp_path, monkeypatch):
    """Trained with resets, a softmax layer's carried evaluation (the final one, and `fwp lm
    eval`) keeps the last segment_len keys, not the whole text (O(T²): the study's transformer
    runs sat in their final evaluation of 544,000 bytes)."""
    from fwp.layers import SoftmaxAttention
    from fwp.lm.model import FwpLM

    kept, trim = [], FwpLM.trim_cache

    def recording(self, state, window):
        out = trim(self, state, window)
        for block, s in zip(self.stack.blocks, out or []):
            if isinstance(block.layer, SoftmaxAttention) and s is not None:
                kept.append(s[0].shape[-2])
        return out

    monkeypatch.setattr(FwpLM, "trim_cache", recording)
    train(tiny(corpus, carry_state=False), tmp_path / "run", say=lambda s: None)
    assert kept and max(kept) == 16  # segment_len; 299 without the cut
    kept.clear()
    assert main(["lm", "eval", str(tmp_path / "run"), "--max-tokens", "300"]) == 0
    assert kept and max(kept) == 16
