"""The algorithmic tasks: every generated target checked against an independent computation
(Python's own execution of the program, a Python evaluation of the expression)."""

import contextlib
import io

import numpy as np
import pytest
import torch

from fwp.errors import UserError
from fwp.formal.config import RunConfig
from fwp.formal.data import batch_loss, encode, position_correct, published_data
from fwp.formal.languages import get_language
from fwp.formal.tasks.listops import OPERATORS
from fwp.formal.train import train


def python_source(program: str) -> str:
    """The program as Python: one line per statement, ``x ++`` as ``x += 1``."""
    lines = []
    for statement in program.split(" ;"):
        tokens = statement.split()
        if not tokens:
            continue
        prefix = ""
        if tokens[0] == "if":
            prefix, tokens = f"if {' '.join(tokens[1:4])}: ", tokens[5:]
        if tokens[0] == "print":
            body = f"print({tokens[1]})"
        elif tokens[1] == "=":
            body = f"{tokens[0]} = {tokens[2]}"
        else:
            body = f"{tokens[0]} {'+' if tokens[1] == '++' else '-'}= 1"
        lines.append(prefix + body)
    return "\n".join(lines)


def run_python(program: str) -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(python_source(program), {})  # noqa: S102 - our own generated test programs
    return out.getvalue().split()


@pytest.mark.parametrize("variables", [3, 5])
def test_code_execution_targets_are_what_python_prints(variables):
    task = get_language(f"code-exec-{variables}")
    rng = np.random.default_rng(variables)
    for size in [1, 2, 7, *([100] * 60)]:
        program = task.sample(size, rng)
        tokens, answers = program.split(), task.answers(program)
        assert len(answers) == len(tokens) and task.bin_size(program) == size
        assert set(tokens) <= set(task.alphabet) and set(answers) <= set(task.classes)
        assert tokens[1] == "=" and (size == 1 or tokens[-3] == "print")
        printed = [a for a in answers if a != "_"]
        assert printed == run_python(program)
        assert all(-8 <= int(v) <= 16 for v in printed)
        # each printed value is the answer at the ';' that ends a print
        for t, answer in enumerate(answers):
            if answer != "_":
                assert tokens[t] == ";" and tokens[t - 2] == "print"


def test_code_execution_uses_every_statement_kind_and_both_branches():
    task = get_language("code-exec-3")
    program = " ".join(task.sample(100, np.random.default_rng(s)) for s in range(20))
    for token in ["=", "++", "--", "print", "if", "<", ">"]:
        assert token in program.split()
    held = skipped = 0
    for seed in range(20):
        source = python_source(task.sample(100, np.random.default_rng(seed)))
        for line in source.splitlines():
            if line.startswith("if") and "print" in line:
                held += 1
        skipped += source.count("if")
    assert held > 0 and skipped > held


def python_value(tokens: list[str]) -> int:
    functions = {"[MIN": "min(", "[MAX": "max(", "[FIRST": "(lambda *a: a[0])("}
    text = "".join(functions.get(t, ")," if t == "]" else t + ",") for t in tokens)
    return eval(text.rstrip(","))  # noqa: S307 - our own generated test expressions


@pytest.mark.parametrize("depth", [1, 3, 10, 15])
def test_listops_values_are_the_evaluated_expressions(depth):
    task = get_language("listops")
    rng = np.random.default_rng(depth)
    for _ in range(30 if depth < 15 else 5):
        example = task.sample(depth, rng)
        tokens = example.split()
        assert tokens[0] in OPERATORS and tokens[-1] == "]"
        assert task.bin_size(example) == depth
        answers = task.answers(example)
        assert answers[:-1] == [None] * (len(tokens) - 1)
        assert int(answers[-1]) == python_value(tokens)


def test_listops_arguments_and_depth_limits():
    task = get_language("listops")
    example = task.sample(4, np.random.default_rng(0))
    counts, stack = [], []
    for token in example.split():
        if token in OPERATORS:
            stack.append(0)
        elif token == "]":
            counts.append(stack.pop())
        if token != "]" and stack and token not in OPERATORS:
            stack[-1] += 1
        elif token in OPERATORS and len(stack) > 1:
            stack[-2] += 1
    assert all(2 <= c <= 5 for c in counts)
    with pytest.raises(UserError, match="depth in 20-30"):
        published_data("listops", "20-30", ["20-30"], 2, 1, 1, seed=1)


@pytest.mark.parametrize("name", ["recall", "mqar", "recall:keys=8,values=3,queries=2"])
def test_recall_answers_are_the_stored_values(name):
    task = get_language(name)
    rng = np.random.default_rng(0)
    for size in [2, 5, 8]:
        example = task.sample(size, rng)
        tokens = example.split()
        end = tokens.index("?")
        keys, values = tokens[0:end:2], tokens[1:end:2]
        assert len(set(keys)) == len(keys) == size == task.bin_size(example)
        queries = tokens[end + 1:]
        expected = {"recall": 1, "mqar": size}.get(name, 2)
        assert len(queries) == len(set(queries)) == expected
        answers = task.answers(example)
        assert answers[end + 1:] == [values[keys.index(q)] for q in queries]
        assert answers[: end + 1] == [None] * (end + 1)


@pytest.mark.parametrize(("name", "message"), [
    ("code-exec:variables=11", "variables must be a whole number in \\[1, 10\\]"),
    ("code-exec-0", "variables must be a whole number"),
    ("recall:keyz=3", "KEY one of keys, values, queries"),
    ("recall:keys=x", "keys must be a whole number"),
    ("listops:depth=3", "takes no options .* --train-bin"),
    ("code-exec-3:variables=4", "fixed setting .* code-exec:KEY=VALUE"),
    ("recall:keys=4,queries=5", "queries \\(5\\) cannot exceed keys \\(4\\)"),
    ("cod-exec", "unknown language or task"),
])
def test_malformed_task_option_is_one_clear_line(name, message):
    with pytest.raises(UserError, match=message) as error:
        get_language(name)
    assert "\n" not in str(error.value)


def test_bad_task_is_refused_before_any_work(tmp_path):
    config = RunConfig(language="code-exec:variables=99")
    with pytest.raises(UserError, match="variables"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    config = RunConfig(language="recall:queries=4", train_bin="2", bins=["2"])
    with pytest.raises(UserError, match="more than the 2 pairs"):
        train(config, tmp_path / "run2", log=None)
    assert not (tmp_path / "run2").exists()


def test_task_names_round_trip():
    for name in ["code-exec-4", "recall:keys=64,values=8", "mqar:values=4", "listops"]:
        task = get_language(name)
        assert get_language(task.name).name == task.name


def test_exclusive_batches_score_answer_positions_with_cross_entropy():
    task = get_language("recall:keys=8,values=3,queries=2")
    strings = [task.sample(3, np.random.default_rng(s)) for s in range(4)]
    batch = encode(task, strings)
    assert batch.exclusive and batch.mask.sum() == 8  # two queries each
    logits = torch.randn(*batch.targets.shape)
    answers = batch.targets.argmax(-1)
    expected = torch.nn.functional.cross_entropy(logits[batch.mask], answers[batch.mask])
    torch.testing.assert_close(batch_loss(logits, batch), expected)
    perfect = 10 * batch.targets
    assert position_correct(perfect, batch)[batch.mask].all()


class _Answers(torch.nn.Module):
    """A fake model whose logits are the targets of the strings it was built from, each
    position's answer replaced by ``replace`` (a class) where ``where`` says so."""

    def __init__(self, batch, where=None, replace=0):
        super().__init__()
        self.logits = 10 * batch.targets.clone()
        if where is not None:
            self.logits[where] = 0.0
            self.logits[..., replace][where] = 10.0

    def forward(self, tokens):
        return self.logits


def test_answer_accuracy_counts_the_printed_values_only():
    from fwp.formal.train import evaluate

    task = get_language("code-exec-3")
    # in the order evaluate() batches them (by length), so that the fake logits line up
    strings = sorted((task.sample(6, np.random.default_rng(s)) for s in range(5)), key=len)
    batch = encode(task, strings)
    printed = batch.mask & (batch.targets.argmax(-1) != task.classes.index("_"))
    assert 0 < int(printed.sum()) < int(batch.mask.sum())
    perfect = evaluate(_Answers(batch), task, strings, batch_size=len(strings))
    assert perfect["seq_acc"] == perfect["pos_acc"] == perfect["answer_acc"] == 100.0
    silent = evaluate(_Answers(batch, printed, replace=task.classes.index("_")), task, strings,
                      batch_size=len(strings))  # says "_" everywhere: right at most positions
    assert silent["answer_acc"] == 0.0 and silent["seq_acc"] == 0.0
    expected = 100.0 * (1 - int(printed.sum()) / int(batch.mask.sum()))
    assert silent["pos_acc"] == pytest.approx(expected)
    # a task without a no-output class reports no answer accuracy (its positions are answers)
    recall = get_language("recall:keys=8,values=3,queries=2")
    queries = sorted((recall.sample(3, np.random.default_rng(s)) for s in range(3)), key=len)
    assert "answer_acc" not in evaluate(_Answers(encode(recall, queries)), recall, queries,
                                        batch_size=3)


def test_data_sets_are_fixed_per_seed_and_disjoint():
    a = published_data("code-exec-3", "5", ["5"], 20, 5, 5, seed=3)
    b = published_data("code-exec-3", "5", ["5"], 20, 5, 5, seed=3)
    assert a.train == b.train and a.valid == b.valid
    assert not set(a.train) & set(a.valid) and not set(a.train) & set(a.test("5"))


@pytest.mark.parametrize(("language", "model", "bins"), [
    ("listops", "mesa", ["2", "3"]), ("code-exec-3", "delta_mlp", ["4", "6"]),
    ("mqar:keys=8,values=4", "deltanet", ["2", "3"]),
])
def test_a_tiny_run_trains_and_reports(tmp_path, language, model, bins):
    config = RunConfig(language=language, train_bin=bins[0], bins=bins, train_size=32,
                       valid_size=8, eval_size=8, epochs=2, batch_size=16, eval_every=2)
    config.network.model, config.network.layers, config.network.d_model = model, 1, 16
    config.network.d_ff = 16
    metrics = train(config, tmp_path / "run", log=None)
    assert set(metrics["bins"]) == {f"{b}-{b}" for b in bins}
    assert 0.0 <= metrics["bins"][f"{bins[1]}-{bins[1]}"]["seq_acc"] <= 100.0
