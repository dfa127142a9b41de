"""The online delayed-recall learner and the cost measurement (a few steps)."""

import torch

from fwp.rl.recall import RecallTask, cost_per_step, online_recall


def test_recall_stream_layout() -> None:
    task = RecallTask(symbols=3, delay=4, distractors=2)
    x, target, start = task.stream(2, 13, torch.Generator().manual_seed(0))
    assert x.shape == (2, 13, task.d_in)
    assert (x.sum(-1) == 1 + start.float()).all()  # the cue step also has the store flag
    assert start[:, ::6].all() and start.sum() == 2 * 3
    recall = target >= 0
    assert recall[:, 5::6].all() and recall.sum() == 2 * 2
    cue = x[:, 0, :3].argmax(-1)
    torch.testing.assert_close(target[:, 5], cue)  # the target is the episode's cue
    assert (x[:, 0, -2] == 1).all() and (x[:, 5, -1] == 1).all()


def test_online_learners_run() -> None:
    task = RecallTask(delay=6)
    for gradient in ("rtrl", "tbptt"):
        result = online_recall("elstm", gradient, task, steps=40, segment=4, batch=2, width=8,
                               log_every=20)
        assert [row["step"] for row in result["curve"]] == [20, 40]


def test_rtrl_memory_does_not_grow_with_the_sequence() -> None:
    rows = cost_per_step("fwp_sum", [8, 32], d_in=4, width=8, batch=2)
    assert rows[0]["rtrl_sensitivity_MB"] == rows[1]["rtrl_sensitivity_MB"]
    assert rows[1]["bptt_saved_MB"] > 3 * rows[0]["bptt_saved_MB"]
