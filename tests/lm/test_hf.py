"""Hugging Face classes: Auto registration, save/load round trip, generate() on the state."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from fwp.errors import UserError  # noqa: E402
from fwp.lm.generate import generate  # noqa: E402
from fwp.lm.hf import FwpCache, FwpConfig, FwpForCausalLM, from_run  # noqa: E402


def tiny(layers=("deltanet", "transformer", "srwm"), **kw) -> FwpForCausalLM:
    config = FwpConfig(vocab_size=11, layers=list(layers), d_model=12, n_heads=2, d_ff=16, **kw)
    return FwpForCausalLM(config).eval()


def test_generate_reads_the_prompt_once_then_one_token_per_call():
    model = tiny()
    lengths = []
    model.register_forward_pre_hook(lambda m, args, kw: lengths.append(kw["input_ids"].shape[1]),
                                    with_kwargs=True)
    prompt = torch.randint(0, 11, (2, 5))
    out = model.generate(prompt, max_new_tokens=6, do_sample=False)
    assert lengths == [5, 1, 1, 1, 1, 1]  # the last token is never fed back
    reference, _ = generate(model.lm, prompt, 6, temperature=0)
    assert torch.equal(out, reference)


def test_save_and_from_pretrained_round_trip(tmp_path):
    model = tiny(fwp_tokenizer={"kind": "chars", "chars": "abcdefghij"})
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "fwp"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(loaded, FwpForCausalLM)
    assert loaded.lm.head.weight is loaded.lm.embed.weight
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    prompt = torch.randint(0, 11, (1, 4))
    sampled = loaded.generate(prompt, max_new_tokens=5, do_sample=True, top_k=4, top_p=0.9,
                              temperature=0.7, num_return_sequences=3)
    assert sampled.shape == (3, 9)
    with pytest.raises(UserError, match="vocabulary mismatch"):
        AutoModelForCausalLM.from_pretrained(tmp_path, vocab_size=300)


def test_forward_loss_cache_and_padding():
    model = tiny(("lstm", "gated_deltanet"))
    ids = torch.randint(0, 11, (2, 7))
    out = model(ids, labels=ids)
    logits, _ = model.lm(ids)
    torch.testing.assert_close(out.logits, logits)
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    torch.testing.assert_close(out.loss, expected)
    first = model(ids[:, :3])
    assert isinstance(first.cache, FwpCache) and first.cache.get_seq_length() == 3
    rest = model(ids[:, 3:], cache=first.cache)
    torch.testing.assert_close(rest.logits, logits[:, 3:], rtol=1e-5, atol=1e-5)
    with pytest.raises(UserError, match="padding"):
        model(ids, attention_mask=torch.tensor([[0] + [1] * 6, [1] * 7]))


def test_a_trained_run_becomes_a_model(tmp_path, monkeypatch):
    from fwp.lm.config import LMConfig, ModelConfig
    from fwp.lm.train import train

    monkeypatch.setenv("FWP_CACHE", str(tmp_path / "cache"))
    (tmp_path / "t.txt").write_text("hello world, hello fast weights.\n" * 200)
    config = LMConfig(data=str(tmp_path / "t.txt"), network=ModelConfig(
        layers=["deltanet"], d_model=16, heads=2, d_ff=32), segment_len=16, batch_size=2,
        steps=2, eval_every=2, eval_tokens=50, final_eval_tokens=50, sample_tokens=0)
    config.validate()
    train(config, tmp_path / "run", say=lambda s: None)
    model = from_run(tmp_path / "run")
    assert model.config.fwp_tokenizer == {"kind": "bytes"} and model.config.vocab_size == 256
    from fwp.cli import main

    assert main(["lm", "export", str(tmp_path / "run"), "--to", str(tmp_path / "hf")]) == 0
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert loaded.config.layers == ["deltanet"]
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
