"""``fwp fewshot explain``: the pieces of each block's query output add up to what ``predict``
computes, the counterfactuals agree with removing those pieces, and the command writes its files."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from fwp.config import to_dict, write_atomic
from fwp.data import EpisodeSampler, load_dataset
from fwp.errors import UserError
from fwp.fewshot.checkpoint import CONFIG
from fwp.fewshot.cli import register
from fwp.fewshot.explain import counterfactual_logits, explain_episode, trace_episode
from fwp.fewshot.model import FewShotLearner
from fwp.fewshot.train import train

from .conftest import tiny_config

CORES = ["srwm", "deltanet", "linear"]
AFFINE = ["srwm", "deltanet"]  # query output affine in the fast weights (linear: normaliser)


@pytest.fixture(scope="module")
def episode(tiny_root):
    dataset = load_dataset("folder", tiny_root, split="test")
    return dataset, EpisodeSampler(dataset, 3, 2, n_query=1, seed=11).episode(0)


@pytest.fixture
def no_grad():
    with torch.no_grad():
        yield


def _learner(tiny_root, dataset, core: str) -> FewShotLearner:
    """An untrained two-block learner in float64 on the reference operators."""
    torch.manual_seed(0)
    config = tiny_config(tiny_root, model=core, layers=2, core_mode="recurrent")
    return FewShotLearner(config, dataset.image_shape).double().eval()


def _explain(tiny_root, episode, core: str):
    dataset, e = episode
    model = _learner(tiny_root, dataset, core)
    inputs = (e.support_images[0], e.support_labels[0], e.query_images[0, 0])
    return model, inputs, explain_episode(model, *inputs, int(e.query_labels[0, 0]))


@pytest.mark.parametrize("core", CORES)
def test_pieces_add_up_to_predict(tiny_root, episode, core, no_grad):
    """Per block, output projection of (initial + Σ support pieces + own write) = the layer's
    query output inside ``predict``; the logits are those of observe + predict."""
    model, (images, labels, query), explanation = _explain(tiny_root, episode, core)
    for block, module in zip(explanation.blocks, model.core.blocks):
        whole = module.layer.out(block.split.total().flatten())
        torch.testing.assert_close(whole, block.layer_output, rtol=0, atol=1e-12)
        assert block.split.support.shape[1] == len(labels)
        assert block.split.support.abs().max() > 1e-6
    state = model.observe(images.double()[None], labels[None])
    logits = model.predict(query.double()[None, None], state)[0, 0]
    torch.testing.assert_close(explanation.logits, logits, rtol=0, atol=1e-12)


@pytest.mark.parametrize("core", CORES)
def test_removing_nothing_or_everything(tiny_root, episode, core, no_grad):
    """Removing no write changes nothing; removing every write of a block equals predicting
    with that block's fast weights reset to their initial values (the others kept)."""
    model, (images, labels, query), explanation = _explain(tiny_root, episode, core)
    trace = trace_episode(model, images, labels, query)
    T, p = len(labels), explanation.predicted
    for index in range(len(model.core.blocks)):
        nothing = counterfactual_logits(model, trace, {index: torch.zeros(1, T)})[0]
        torch.testing.assert_close(nothing, trace.logits, rtol=0, atol=1e-12)
        reset_state = [None if i == index else s for i, s in enumerate(trace.state)]
        reset = model.predict_features(trace.query_features, reset_state)[0, 0]
        everything = counterfactual_logits(model, trace, {index: torch.ones(1, T)})[0]
        torch.testing.assert_close(everything, reset, rtol=0, atol=1e-10)
        expected = float(trace.logits[p] - reset[p])
        assert explanation.blocks[index].reset_effect == pytest.approx(expected, abs=1e-10)
    start = model.predict_features(trace.query_features, [None] * len(trace.state))[0, 0]
    assert explanation.reset_effect == pytest.approx(float(trace.logits[p] - start[p]), abs=1e-10)


@pytest.mark.parametrize("core", CORES)
def test_leave_one_out_is_the_episode_run_without_the_example(tiny_root, episode, core, no_grad):
    model, (images, labels, query), explanation = _explain(tiny_root, episode, core)
    p = explanation.predicted
    for t in (0, len(labels) - 1):
        keep = [i for i in range(len(labels)) if i != t]
        state = model.observe(images.double()[None, keep], labels[None, keep])
        without = model.predict(query.double()[None, None], state)[0, 0, p]
        expected = float(explanation.logits[p] - without)
        assert float(explanation.leave_one_out[t]) == pytest.approx(expected, abs=1e-10)
    # the first example's later writes change when it is left out, so the two measures differ
    assert not torch.allclose(explanation.leave_one_out, explanation.effects, atol=1e-6)


@pytest.mark.parametrize("core", AFFINE)
def test_effects_are_the_pieces_removed(tiny_root, episode, core, no_grad):
    """For srwm and deltanet, taking write τ out of the fast weights = subtracting its piece
    (through the output projection) from the block's query output and re-running the rest;
    subtracting every support piece = the block's fast weights reset."""
    model, (images, labels, query), explanation = _explain(tiny_root, episode, core)
    trace = trace_episode(model, images, labels, query)
    p = explanation.predicted
    for block, module in zip(explanation.blocks, model.core.blocks):
        removed = list(block.split.support.unbind(1)) + [block.split.support.sum(1)]
        logits = []
        for piece in removed:
            change = module.layer.out(piece.flatten())
            handle = module.layer.register_forward_hook(
                lambda m, args, output, change=change: (output[0] - change, output[1])
            )
            try:
                logits.append(model.predict_features(trace.query_features, trace.state)[0, 0, p])
            finally:
                handle.remove()
        effects = trace.logits[p] - torch.stack(logits)
        torch.testing.assert_close(effects[:-1], block.effects.double(), rtol=0, atol=1e-10)
        assert float(effects[-1]) == pytest.approx(block.reset_effect, abs=1e-10)
        assert block.effects.abs().max() > 1e-8


def test_deltanet_own_write_is_the_write_on_initial_weights(tiny_root, episode, no_grad):
    """The deltanet split leaves with the query its write as it would be on S_0 = 0:
    β_q (q · k_q) v_q, i.e. initial + own write = the block's output from reset fast weights."""
    model, (images, labels, query), explanation = _explain(tiny_root, episode, "deltanet")
    trace = trace_episode(model, images, labels, query)
    for index, block in enumerate(explanation.blocks):
        layer = model.core.blocks[index].layer
        alone, _ = layer(trace.layer_inputs[index][:, -1:], None)
        torch.testing.assert_close(
            layer.out((block.split.initial + block.split.own_write).flatten()), alone[0, 0],
            rtol=0, atol=1e-12,
        )


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fwp fewshot")
    register(parser.add_subparsers())
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("core", AFFINE)
def test_cli_writes_json_and_pictures(tiny_root, tmp_path, core, capsys):
    run, out = tmp_path / "run", tmp_path / "explained"
    config = tiny_config(tiny_root, model=core, layers=2, steps=2, eval_every=2,
                         val_episodes=2, k_extra=0)
    train(config, run, progress=False)
    args = parse("explain", str(run), "--out", str(out), "--query", "1", "--head", "1",
                 "--episode-seed", "3")
    assert args.func(args) == 0
    result = json.loads((out / "explain.json").read_text())
    T = config.data.n_way * config.data.k_shot
    assert len(result["support_labels"]) == T and result["query"] == 1
    assert result["predicted_class"] in range(3) and result["true_class"] in range(3)
    assert [b["layer"] for b in result["blocks"]] == [core, core]
    for block in result["blocks"]:
        assert len(block["effects"]) == T and len(block["class_effects"]) == 3
        norms = block["contribution_norms"]
        assert len(norms["support"]) == config.network.heads and len(norms["support"][0]) == T
    assert len(result["all_blocks"]["effects"]) == T
    for name in ("attribution.png", "fast_weights.png"):
        assert (out / name).stat().st_size > 10_000
    assert "predicted" in capsys.readouterr().out


def test_cli_errors(tiny_root, tmp_path):
    args = parse("explain", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"))
    with pytest.raises(UserError, match="does not exist"):
        args.func(args)
    run = tmp_path / "lstm"
    run.mkdir()
    write_atomic(run / CONFIG, to_dict(tiny_config(tiny_root, model="lstm")))
    args = parse("explain", str(run), "--out", str(tmp_path / "x"))
    with pytest.raises(UserError, match="fast weight core: srwm, deltanet or linear"):
        args.func(args)
