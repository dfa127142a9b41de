"""Delayed labels, sequential multi-task streams and meta-continual learning."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from fwp.data.streams import StreamSampler
from fwp.fewshot.model import FewShotLearner
from fwp.fewshot.protocols.continual import continual_logits, continual_loss
from fwp.fewshot.protocols.streams import delayed_label_input, stream_logits, stream_loss

from ..data.test_streams import coded
from .conftest import tiny_config


def learner(tiny_root, model: str = "srwm", short_conv: int = 0, token_shift: bool = False
            ) -> FewShotLearner:
    config = tiny_config(tiny_root, model=model, n_way=3)
    config.network.short_conv = short_conv  # valid with --protocol delayed / sequential
    config.network.token_shift = token_shift
    return FewShotLearner(config, (1, 16, 16)).eval()


def two_domains():
    return [coded(0, 6, 6, size=16), coded(1, 6, 6, size=16)]


def test_delayed_label_input():
    labels = torch.tensor([[2, 0, 1, 1]])
    out = delayed_label_input(labels, 3)
    assert torch.equal(out[0, 0], torch.zeros(3))
    assert torch.equal(out[0, 1:], F.one_hot(labels[0, :-1], 3).float())


CAUSAL_CASES = [
    ("srwm", 0, False), ("srwm", 2, False), ("srwm", 0, True), ("deltanet", 0, True),
    ("lstm", 0, False), ("transformer", 3, True),
]


@pytest.mark.parametrize("model, short_conv, token_shift", CAUSAL_CASES)
def test_changing_label_t_changes_predictions_from_t_plus_1_only(
        tiny_root, model, short_conv, token_shift):
    """Step t's prediction is made before its label is given: a different label y_t leaves
    every prediction up to t exactly as it was and changes the one at t + 1."""
    net = learner(tiny_root, model, short_conv=short_conv, token_shift=token_shift)
    stream = StreamSampler([coded(0, 6, 6, size=16)], 3, 4, seed=2).batch(range(3))
    before = stream_logits(net, stream)
    for t in (0, 5, 10):
        changed = stream.labels.clone()
        changed[:, t] = (changed[:, t] + 1) % 3
        stream_t = type(stream)(**{**stream.__dict__, "labels": changed})
        after = stream_logits(net, stream_t)
        assert torch.equal(after[:, : t + 1], before[:, : t + 1]), t
        assert not torch.allclose(after[:, t + 1], before[:, t + 1]), t


@pytest.mark.parametrize("model, short_conv, token_shift", CAUSAL_CASES)
def test_changing_image_t_changes_predictions_from_t_only(
        tiny_root, model, short_conv, token_shift):
    """No step reads a later image: a different x_t leaves the predictions before t as they
    were and changes the one at t (and, through the shift or the core, the next one)."""
    net = learner(tiny_root, model, short_conv=short_conv, token_shift=token_shift)
    stream = StreamSampler([coded(0, 6, 6, size=16)], 3, 4, seed=2).batch(range(3))
    before = stream_logits(net, stream)
    for t in (1, 5, 10):
        images = stream.images.clone()
        images[:, t] = images[:, t].flip(-1)
        after = stream_logits(net, type(stream)(**{**stream.__dict__, "images": images}))
        assert torch.equal(after[:, :t], before[:, :t]), t
        assert not torch.allclose(after[:, t + 1], before[:, t + 1]), t


def test_stream_loss_counts_valid_steps_only(tiny_root):
    net = learner(tiny_root)
    sampler = StreamSampler(two_domains(), 3, 4, segments=2, max_trim=5, seed=0)
    stream = sampler.batch(range(4))
    assert not stream.valid.all()
    logits = stream_logits(net, stream)
    loss, accuracy = stream_loss(logits, stream)
    expected = F.cross_entropy(logits[stream.valid], stream.labels[stream.valid])
    assert torch.allclose(loss, expected)
    # Padding changes nothing: the same streams without it give the same valid logits.
    for b in range(4):
        alone = sampler.batch([b])
        n = int(alone.valid.sum())
        single = stream_logits(net, alone)
        assert torch.allclose(single[0, :n], logits[b, :n], atol=1e-5)


def continual_stream(n_query: int = 2):
    return StreamSampler(two_domains(), 3, 2, n_query=n_query, segments=2, seed=4).batch(range(4))


def test_continual_queries_are_the_plain_episode_then_its_continuation(tiny_root):
    """A|A is exactly the plain few-shot episode on task A; A|AB and B|AB read the state
    after A then B; B|B is B learnt from the start."""
    net = learner(tiny_root)
    stream = continual_stream()
    logits = continual_logits(net, stream, alone=True)
    half = stream.labels.shape[1] // 2
    plain = net(stream.images[:, :half], stream.labels[:, :half], stream.query_images[:, 0])
    assert torch.allclose(logits["A|A"], plain.student_logits, atol=1e-6)
    state = net.observe(stream.images[:, :half], stream.labels[:, :half])
    state = net.observe(stream.images[:, half:], stream.labels[:, half:], state)
    assert torch.allclose(logits["A|AB"], net.predict(stream.query_images[:, 0], state), atol=1e-6)
    assert torch.allclose(logits["B|AB"], net.predict(stream.query_images[:, 1], state), atol=1e-6)
    alone = net(stream.images[:, half:], stream.labels[:, half:], stream.query_images[:, 1])
    assert torch.allclose(logits["B|B"], alone.student_logits, atol=1e-6)
    assert not torch.allclose(logits["A|A"], logits["A|AB"])


def test_continual_loss_with_weight_0_is_the_plain_loss_exactly(tiny_root):
    net = learner(tiny_root).train()
    stream = continual_stream()

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        return [g.clone() for g in torch.autograd.grad(loss, list(net.parameters()),
                                                       allow_unused=True, materialize_grads=True,
                                                       retain_graph=True)]

    torch.manual_seed(0)
    logits = continual_logits(net, stream)
    plain = (0.1 * F.cross_entropy(logits["A|A"].flatten(0, 1), stream.query_labels[:, 0].flatten())
             + F.cross_entropy(logits["B|AB"].flatten(0, 1), stream.query_labels[:, 1].flatten()))
    loss, parts = continual_loss(logits, stream.query_labels, first_task_weight=0.1,
                                 forget_weight=0.0)
    assert torch.equal(loss, plain) and set(parts) == {"A|A", "B|AB"}
    assert all(torch.equal(a, b) for a, b in zip(grads(loss), grads(plain)))
    # With λ > 0 the anti-forgetting term CE(A | A→B) is added with its weight.
    with_term, parts = continual_loss(logits, stream.query_labels, first_task_weight=0.1,
                                      forget_weight=0.5)
    forget = F.cross_entropy(logits["A|AB"].flatten(0, 1), stream.query_labels[:, 0].flatten())
    assert torch.allclose(with_term, plain + 0.5 * forget) and torch.equal(parts["A|AB"], forget)


# -- the workflow: train, resume, eval, report --------------------------------------------------

TINY = ("--dataset", "folder", "--n-way", "2", "--k-shot", "3",
        "--conv-channels", "8", "--layers", "1", "--d-model", "16", "--heads", "2", "--d-ff",
        "16", "--eval-every", "2", "--val-episodes", "4", "--batch-size", "2", "--threads", "1",
        "--schedule", "constant", "--lr", "3e-3", "--no-progress")


def parse(*argv: str):
    import argparse

    from fwp.fewshot.cli import register

    parser = argparse.ArgumentParser(prog="fwp fewshot")
    register(parser.add_subparsers())
    return parser.parse_args(list(argv))


def test_resume_equals_uninterrupted_for_streams(tiny_root, tmp_path):
    from fwp.fewshot.checkpoint import CHECKPOINT, load_checkpoint
    from fwp.fewshot.config import config_from_args
    from fwp.fewshot.train import train

    args = parse("train", *TINY, "--data-root", str(tiny_root), "--protocol", "sequential",
                 "--max-trim", "2", "--steps", "4", "--out", "x")
    config = config_from_args(args)
    train(config, tmp_path / "whole", progress=False)
    train(config, tmp_path / "parts", stop_after=2, progress=False)
    train(config, tmp_path / "parts", resume=True, progress=False)
    a, b = (load_checkpoint(tmp_path / run / CHECKPOINT) for run in ("whole", "parts"))
    assert a["sampler"] == b["sampler"] == {"seed": 1, "next_episode": 8}
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_train_eval_report_for_each_protocol(tiny_root, tmp_path, capsys):
    import json

    runs = []
    for protocol, extra in (("delayed", ()), ("sequential", ("--max-trim", "2")),
                            ("continual", ("--forget-weight", "1", "--first-task-weight", "0.1",
                                           "--n-query", "2"))):
        run = tmp_path / protocol
        args = parse("train", *TINY, "--data-root", str(tiny_root), "--protocol", protocol,
                     "--steps", "2", "--out", str(run), *extra)
        assert args.func(args) == 0
        args = parse("eval", str(run), "--episodes", "6")
        assert args.func(args) == 0
        result = json.loads((run / "eval_test.json").read_text())
        assert result["protocol"] == protocol
        assert (run / f"{protocol}_test.png").stat().st_size > 1000
        orders = result["result"]["orders"]
        if protocol == "continual":
            assert set(orders[0]) >= {"A|A", "A|AB", "B|AB", "B|B", "forgetting"}
        else:
            tasks = orders[0]["tasks"]
            assert len(tasks) == (1 if protocol == "delayed" else 2)
            assert len(tasks[0]["by_instance"]) == 3
            assert len(orders[0]["by_position"]) == 3 * 2 * len(tasks)
        runs.append(str(run))
    args = parse("report", *runs, "--out", str(tmp_path / "report"))
    assert args.func(args) == 0
    table = (tmp_path / "report" / "report.md").read_text()
    for title in ("Delayed labels", "Sequential multi-task", "Meta-continual"):
        assert title in table
    continual_rows = [row for row in table.splitlines() if row.startswith("| continual | 1 |")]
    assert len(continual_rows) == 1 and "| all |" not in continual_rows[0]  # one order: one row
    assert len(list((tmp_path / "report").glob("*.png"))) == 3


@pytest.mark.parametrize("argv, message", [
    (("--protocol", "online"), "unknown --protocol 'online'"),
    (("--protocol", "delayed", "--beta3", "1", "--k-extra", "1"), "has no bootstrapped loss"),
    (("--protocol", "delayed", "--max-trim", "6"), "would drop a whole segment"),
    (("--protocol", "delayed", "--second-dataset", "glyphs"), "reads one data set"),
    (("--protocol", "continual", "--forget-weight", "-1"), "--forget-weight must be ≥ 0"),
    (("--protocol", "sequential", "--second-dataset", "mnist"), "unknown --second-dataset"),
    (("--short-conv", "2"), "--short-conv is for the delayed / sequential streams"),
    (("--protocol", "continual", "--short-conv", "2"), "--short-conv is for the delayed"),
])
def test_bad_protocol_settings_are_refused(argv, message):
    from fwp.errors import UserError
    from fwp.fewshot.config import config_from_args

    with pytest.raises(UserError, match=message):
        config_from_args(parse("train", *TINY, "--out", "x", *argv))
