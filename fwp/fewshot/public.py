"""Checkpoints of the public few-shot SRWM code as fwp run folders (``fwp fewshot import``).

The public code (IDSIA/modern-srwm, ``supervised_learning/``) saves
``{"model_state_dict": model.state_dict(), "optimizer_state_dict": ..., "epoch" or
"train_step": step, "valid_acc" or "valid_total_acc": accuracy}`` of one of two model classes of
``model_few_shot.py`` with the same parameters under two names:

- ``StatefulConvSRWMModel`` (``--model_type stateful_srwm``, the bootstrapping scripts):
  ``fw_layers.<l>.*`` (the SRWM sub-layer) and ``ff_layers.<l>.*`` (the feed-forward one);
- ``ConvSRWMModel`` (``--model_type srwm``, the plain K-shot scripts): the same sub-layers
  alternating in ``layers.<2l>.*`` and ``layers.<2l+1>.*``.

Both have ``conv_layers.<i>.{0: Conv2d, 1: BatchNorm2d}`` (the Conv-4), ``input_proj``
(Lin([features; label one-hot]) → hidden) and ``out_layer``. The SRWM sub-layer (``layer.py``
``SRWMlayer``) holds per head four matrices indexed [input, output]: ``W_y``, ``W_q``, ``W_k``
``[1, H, D, D]`` and ``w_b`` ``[1, H, D, 4]`` (rates of the blocks y, q, k, β), its
``layer_norm`` and ``out_linear``; the feed-forward one (``TransformerFFlayers``) ``layer_norm``
and ``ff_layers.{0, 3}`` (the two linear maps). fwp's W0 ``[H, R, D]`` stacks the transposed
blocks in the paper's row order y, k, q, β, and its β rows in that order too.

The model this gives is the paper presets' (``residual = "normed_skip"``, ``n_beta = 4``,
``final_norm = false``; ``tests/fewshot/test_public_model.py`` checks it against a transcription
of the public code), with the public query input (``query_input = "class0"``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from fwp.config import to_dict
from fwp.errors import UserError, brief
from fwp.fewshot.config import RunConfig
from fwp.fewshot.model import FewShotLearner
from fwp.runs import RunFolder, save_checkpoint

# Network fields the public model fixes: field → its value there.
PUBLIC_NETWORK = {"model": "srwm", "backbone": "conv4", "residual": "normed_skip",
                  "final_norm": False, "n_beta": 4, "token_shift": False, "short_conv": 0}
PUBLIC_RATES = (0, 2, 1, 3)  # public rate i ↔ fwp β row PUBLIC_RATES[i] (y, q, k, β ↔ y, k, q, β)
LAYOUTS = ("stateful_srwm", "srwm")


def _sub_layers(layout: str, block: int) -> tuple[str, str]:
    """Public names of block ``block``'s SRWM and feed-forward sub-layers."""
    if layout == "stateful_srwm":
        return f"fw_layers.{block}", f"ff_layers.{block}"
    return f"layers.{2 * block}", f"layers.{2 * block + 1}"


def copied_names(blocks: int, layout: str) -> dict[str, str]:
    """Public name → fwp name of every tensor copied as it is (all but the SRWM matrices)."""
    names = {}
    for i in range(4):
        names.update({f"conv_layers.{i}.0.{p}": f"backbone.net.{5 * i}.{p}"
                      for p in ("weight", "bias")})
        names.update({f"conv_layers.{i}.1.{p}": f"backbone.net.{5 * i + 1}.{p}" for p in (
            "weight", "bias", "running_mean", "running_var", "num_batches_tracked")})
    for public, ours in (("input_proj", "input"), ("out_layer", "head")):
        names.update({f"{public}.{p}": f"{ours}.{p}" for p in ("weight", "bias")})
    for b in range(blocks):
        srwm, ff, ours = *_sub_layers(layout, b), f"core.blocks.{b}"
        names[f"{srwm}.out_linear.weight"] = f"{ours}.layer.out.weight"
        for p in ("weight", "bias"):
            names[f"{srwm}.layer_norm.{p}"] = f"{ours}.norm.{p}"
            names[f"{ff}.layer_norm.{p}"] = f"{ours}.ff.net.0.{p}"
            names[f"{ff}.ff_layers.0.{p}"] = f"{ours}.ff.net.1.{p}"
            names[f"{ff}.ff_layers.3.{p}"] = f"{ours}.ff.net.4.{p}"
    return names


def expected_shapes(model: FewShotLearner, layout: str) -> dict[str, tuple[int, ...]]:
    """Every key of a public checkpoint of ``model``'s architecture and its shape."""
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    shapes = {public: ours[name]
              for public, name in copied_names(len(model.core.blocks), layout).items()}
    for b, block in enumerate(model.core.blocks):
        srwm, H, D = _sub_layers(layout, b)[0], block.layer.n_heads, block.layer.head_dim
        shapes.update({f"{srwm}.{w}": (1, H, D, D) for w in ("W_y", "W_q", "W_k")})
        shapes[f"{srwm}.w_b"] = (1, H, D, 4)
    return shapes


def to_fwp(public: dict[str, torch.Tensor], model: FewShotLearner,
           layout: str) -> dict[str, torch.Tensor]:
    """fwp's state dict of a public one (checked by :func:`check_keys`)."""
    blocks = len(model.core.blocks)
    state = {name: public[key] for key, name in copied_names(blocks, layout).items()}
    for b in range(blocks):
        srwm = _sub_layers(layout, b)[0]
        y, q, k, rates = (public[f"{srwm}.{w}"][0].transpose(1, 2)
                          for w in ("W_y", "W_q", "W_k", "w_b"))
        state[f"core.blocks.{b}.layer.W0"] = torch.cat([y, k, q, rates[:, list(PUBLIC_RATES)]], 1)
    return state


def _listed(names: list[str], limit: int = 6) -> str:
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_keys(public: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]],
               where: str, what: str) -> None:
    """One line naming the unknown keys, missing keys and wrong shapes, if any."""
    unknown = sorted(set(public) - set(expected))
    missing = sorted(set(expected) - set(public))
    wrong = [f"{k} {list(public[k].shape)} (expected {list(v)})"
             for k, v in expected.items() if k in public and tuple(public[k].shape) != v]
    problems = [f"{label}: {_listed(names)}" for label, names in (
        ("unknown keys", unknown), ("missing keys", missing), ("wrong shapes", wrong)) if names]
    if problems:
        raise UserError(f"{where} is not a public few-shot SRWM checkpoint of {what}: "
                        f"{'; '.join(problems)}. Give the preset and flags of the script that "
                        "trained it (--layers, --heads, --d-model, --d-ff, --n-way, --dataset)")


def read_public(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The model's state dict and the rest of a public checkpoint file (a bare state dict too)."""
    if not path.is_file():
        raise UserError(f"no checkpoint file {path}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 — any unreadable file is the same user problem
        raise UserError(f"cannot read {path} as a torch checkpoint ({brief(error)}); it should be "
                        "a file saved by the public few-shot SRWM code") from None
    if isinstance(saved, dict) and isinstance(saved.get("model_state_dict"), dict):
        return saved["model_state_dict"], saved
    if isinstance(saved, dict) and all(isinstance(v, torch.Tensor) for v in saved.values()):
        return saved, {}
    raise UserError(f"{path} holds no model: expected a dict with 'model_state_dict' (the "
                    "public code's checkpoints) or a state dict")


def check_network(config: RunConfig) -> None:
    """One line naming the network fields where the config is not the public model."""
    net = config.network
    layer = net.core_options()
    actual = {k: layer.get(k, getattr(net, k)) if k == "n_beta" else getattr(net, k)
              for k in PUBLIC_NETWORK}
    differ = [f"--{k.replace('_', '-')} {v!r} (public: {PUBLIC_NETWORK[k]!r})"
              for k, v in actual.items() if v != PUBLIC_NETWORK[k]]
    if layer.get("allow_negative_eigenvalues"):
        differ.append("--layer-option allow_negative_eigenvalues=true (public: rates σ(b))")
    if differ:
        raise UserError(f"the public few-shot SRWM model has another network than this config: "
                        f"{', '.join(differ)}; start from a paper preset (e.g. --preset "
                        "table2_k10_boot)")


def import_public(path: Path, run: Path, config: RunConfig,
                  image_shape: tuple[int, int, int]) -> dict:
    """Write ``run`` (``config.json`` and ``best.pt``, as a trained run has them) from the
    public checkpoint at ``path``, so that ``fwp fewshot eval RUN`` evaluates it. Returns the
    step and the validation accuracy the file records (None where it records none) and the
    layout it was in. Every check passes before anything is written."""
    check_network(config)
    folder = RunFolder(run)
    if run.is_dir() and any(run.iterdir()):
        raise UserError(f"{run} exists and is not empty; choose a new --out")
    public, extra = read_public(path)
    layout = LAYOUTS[1] if any(k.startswith("layers.") for k in public) else LAYOUTS[0]
    model = FewShotLearner(config, image_shape)
    net = config.network
    what = (f"{net.layers} blocks, {net.heads} heads, d_model {net.d_model}, d_ff {net.d_ff}, "
            f"{config.data.n_way}-way, {list(image_shape)} images")
    check_keys(public, expected_shapes(model, layout), str(path), what)
    model.load_state_dict(to_fwp(public, model, layout))
    step = int(extra.get("epoch", extra.get("train_step", 0)))
    accuracy = extra.get("valid_acc", extra.get("valid_total_acc"))
    accuracy = None if accuracy is None else 100 * float(accuracy)
    best = {"step": step} if accuracy is None else {"step": step, "accuracy": accuracy}
    with folder.locked("run"):
        folder.claim(to_dict(config), fresh=True)
        save_checkpoint(folder.best, {
            "model": model.state_dict(), "step": step, "best": best, "config": to_dict(config),
            "image_shape": list(image_shape), "imported_from": str(path.resolve()),
        })
    return {"layout": layout, "step": step, "valid_accuracy": accuracy}
