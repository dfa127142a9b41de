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


def test_a_cpu_budget_runs_the_learner_for_that_much_cpu_time() -> None:
    result = online_recall("elstm", "tbptt", RecallTask(delay=6), steps=10, segment=4, batch=2,
                           width=8, cpu_seconds=0.3)
    assert result["cpu_seconds"] >= 0.3 and result["steps"] > 10  # steps only caps a step run
    assert result["steps"] % 4 == 0


def test_the_report_pairs_rtrl_with_truncated_bptt_by_seed(tmp_path) -> None:
    from fwp.rl.recall import recall_report

    def learner(gradient: str, seed: int, accuracy: float, cell: str = "elstm",
                learnt: float = 1.0) -> dict:
        return {"cell": cell, "gradient": gradient, "seed": seed, "steps": 100,
                "cpu_seconds": 1.0, "ms_per_step": 10.0, "final_accuracy": accuracy,
                "curve": [{"step": 100, "cpu_s": learnt, "accuracy": accuracy}]}

    results = {"recall": [learner("rtrl", 1, 0.9), learner("tbptt", 1, 0.3),
                          learner("rtrl", 2, 0.8), learner("tbptt", 2, 0.4)], "cost": []}
    both = (("rtrl", 1, 2.0), ("rtrl", 2, 3.0), ("tbptt", 1, 4.0), ("tbptt", 2, 4.0))
    results["recall"] += [learner(g, seed, 1.0, "fwp_sum", t) for g, seed, t in both]
    text = recall_report(results, tmp_path)
    # differences 0.6 and 0.4: mean 0.5, t = 0.5 / (0.1414 / √2) = 5 with 1 df, p = 0.1257
    assert "| elstm | final accuracy | +0.500 | 2 | [-0.771, +1.771] | 0.1257 |" in text
    assert "| elstm | CPU s to learn |" not in text  # truncated BPTT never learnt: censored
    assert "| fwp_sum | CPU s to learn | -1.500 | 2 |" in text  # differences −2 and −1
    assert "| 0.850 [0.800, 0.900] | 1 of 2 | 1.0 [1.0, 1.0] |" in text  # RTRL seed 1 learnt
    assert (tmp_path / "rtrl.md").read_text() == text and (tmp_path / "recall.png").is_file()


def test_the_command_keeps_what_it_measured_and_remeasures_on_new_settings(tmp_path, capsys
                                                                          ) -> None:
    import json

    from fwp.cli import main

    argv = ["rl", "rtrl", "--out", str(tmp_path), "--cells", "elstm", "--steps", "24",
            "--segment", "4", "--delay", "6", "--lengths", "8"]
    main(argv)
    first = json.loads((tmp_path / "rtrl.json").read_text())
    assert [(r["gradient"], r["seed"]) for r in first["recall"]] == [("rtrl", 1), ("tbptt", 1)]
    main(argv)
    assert "resuming (2 learners measured)" in capsys.readouterr().out
    assert json.loads((tmp_path / "rtrl.json").read_text()) == first  # nothing re-measured
    main(argv[:-4] + ["--delay", "8", "--lengths", "8"])
    assert "measured with other settings" in capsys.readouterr().out
    assert json.loads((tmp_path / "rtrl.json").read_text())["settings"]["delay"] == 8
