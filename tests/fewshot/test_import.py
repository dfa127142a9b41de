"""``fwp fewshot import``: a checkpoint under the public few-shot code's names, written by the
float64 transcription of that code (test_public_model.py), becomes a run whose logits are the
transcription's; files that do not fit are refused in one line that names the keys."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from fwp.cli import main
from fwp.config import to_dict
from fwp.data import EpisodeSampler, load_dataset
from fwp.errors import UserError
from fwp.fewshot.checkpoint import read_config
from fwp.fewshot.evaluate import load_trained
from fwp.fewshot.model import FewShotLearner
from fwp.fewshot.public import import_public

from .conftest import tiny_config
from .test_public_model import PUBLIC, public_model, public_state_dict


def _as_layout(P: dict, layout: str) -> dict:
    """``ConvSRWMModel``'s names (``--model_type srwm``): sub-layers alternate in ``layers``."""
    if layout == "stateful_srwm":
        return P
    renamed = {}
    for key, value in P.items():
        kind, _, rest = key.partition("_layers.")
        if kind in ("fw", "ff"):
            block, _, name = rest.partition(".")
            key = f"layers.{2 * int(block) + (kind == 'ff')}.{name}"
        renamed[key] = value
    return renamed


@pytest.fixture
def public_file(tiny_root, tmp_path):
    """A trained-looking public checkpoint (float32, as the public code saves) and its config."""
    config = tiny_config(tiny_root, **PUBLIC)
    torch.manual_seed(3)
    model = FewShotLearner(config, (1, 16, 16))
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():  # every weight and BatchNorm statistic non-trivial
                tensor.add_(0.3 * torch.randn_like(tensor))
                if "running_var" in name:
                    tensor.abs_()
    P = {k: v.detach().clone() for k, v in public_state_dict(model).items()}
    path = tmp_path / "best_model.pt"
    torch.save({"epoch": 4000, "model_state_dict": P, "optimizer_state_dict": {},
                "valid_acc": 0.5125}, path)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(to_dict(config)))
    return path, config_file, config, P


@pytest.mark.parametrize("layout", ["stateful_srwm", "srwm"])
def test_imported_logits_equal_the_public_code(tiny_root, tmp_path, public_file, layout):
    path, config_file, _, P = public_file
    torch.save({"epoch": 4000, "model_state_dict": _as_layout(P, layout)}, path)
    run = tmp_path / "run"
    assert main(["fewshot", "import", str(path), "--out", str(run),
                 "--config", str(config_file)]) == 0
    config = read_config(run)
    assert config.network.query_input == "class0"
    model, source = load_trained(run, config)
    assert source["step"] == 4000
    model = model.double().eval()

    e = EpisodeSampler(load_dataset("folder", tiny_root, split="test"), 3, 2, n_query=1,
                       seed=5).sample(4)
    support, query = e.support_images.double(), e.query_images[:, :1].double()
    with torch.no_grad():
        ours = model.predict(query, model.observe(support, e.support_labels))[:, 0]
        # eval_sync.py: support and query in one sequence, the query's label input class 0
        images = torch.cat([support, query], 1).transpose(0, 1)
        labels = F.one_hot(torch.cat([e.support_labels, torch.zeros_like(e.query_labels[:, :1])],
                                     1), 3).double().transpose(0, 1)
        theirs = public_model({k: v.double() for k, v in P.items()}, images, labels,
                              training=False)[0][-1]
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(ours[:, 0], ours[:, 1])  # a real model, not a constant

    assert main(["fewshot", "eval", str(run), "--episodes", "6", "--k-test", "1", "2"]) == 0
    assert json.loads((run / "eval_test.json").read_text())["results"][1]["k_test"] == 2


def test_a_file_that_does_not_fit_is_named_in_one_line(tmp_path, public_file):
    path, _, config, P = public_file
    P = dict(P)
    P["fw_layers.0.extra"] = torch.zeros(1)
    del P["out_layer.bias"]
    P["fw_layers.0.W_q"] = torch.zeros(1, 4, 4, 4)
    torch.save({"model_state_dict": P}, path)
    with pytest.raises(UserError) as error:
        import_public(path, tmp_path / "run", config, (1, 16, 16))
    message = str(error.value)
    assert "\n" not in message
    assert "unknown keys: fw_layers.0.extra" in message
    assert "missing keys: out_layer.bias" in message
    assert "wrong shapes: fw_layers.0.W_q [1, 4, 4, 4] (expected [1, 2, 8, 8])" in message
    assert not (tmp_path / "run").exists()


def test_a_network_other_than_the_public_one_is_refused(tiny_root, tmp_path, public_file):
    path = public_file[0]
    config = tiny_config(tiny_root, **{**PUBLIC, "residual": "normed", "n_beta": 1})
    with pytest.raises(UserError, match=r"--residual 'normed' \(public: 'normed_skip'\), "
                                        r"--n-beta 1 \(public: 4\)"):
        import_public(path, tmp_path / "run", config, (1, 16, 16))


def test_the_query_input_option(tiny_root):
    config = tiny_config(tiny_root, query_input="class0")
    model = FewShotLearner(config, (1, 16, 16))
    features = torch.randn(2, 3, model.input.in_features - 3)
    torch.testing.assert_close(model.embed(features, None),
                               model.embed(features, torch.zeros(2, 3, dtype=torch.long)))
    zeros = FewShotLearner(tiny_config(tiny_root), (1, 16, 16))
    zeros.load_state_dict(model.state_dict())
    assert not torch.allclose(zeros.embed(features, None), model.embed(features, None))
