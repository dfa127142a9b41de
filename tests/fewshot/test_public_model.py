"""fwp's public architecture equals the public few-shot SRWM learner, outputs and gradients.

The public learner (IDSIA/modern-srwm, ``supervised_learning/``: ``model_few_shot.py``
``StatefulConvSRWMModel`` / ``ConvSRWMModel``, ``layer.py`` ``SRWMlayer`` and
``TransformerFFlayers``, the ``self_ref_v0`` CUDA kernel, the training step of
``main_few_shot_sync_bootstrapping.py``) is written out below in float64 from its equations, in
its own layout: time-major sequences, per head four matrices W_y, W_q, W_k ``[D_in, D_out]``
and w_b ``[D_in, 4]`` (rates 0…3 for the blocks y, q, k, β), a state that stores the shift
W − W0, a per-step loop. It reads a state dict under the public code's names
(``StatefulConvSRWMModel.state_dict()``); :func:`public_state_dict` gives fwp's parameters under
those names as views, so one backward pass of each gives gradients with respect to the same
leaves. ``test_import.py`` writes such a state dict as a public checkpoint.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from fwp.data import EpisodeSampler, load_dataset
from fwp.fewshot.losses import bootstrap_loss
from fwp.fewshot.model import FewShotLearner

from .conftest import tiny_config

PUBLIC = dict(residual="normed_skip", final_norm=False, n_beta=4, layers=2, d_model=16, heads=2,
              d_ff=24, dropout=0.0, conv_dropout=0.0)


def public_weights(layer) -> tuple[torch.Tensor, ...]:
    """fwp's W0 ``[H, R, D]`` (rows y, k, q, β) as the public W_y, W_q, W_k, w_b ``[H, D, ·]``."""
    D = layer.head_dim
    W0 = layer.W0
    rates = W0[:, 3 * D:][:, [0, 2, 1, 3]]  # public rate order y, q, k, β
    return (W0[:, :D].transpose(1, 2), W0[:, 2 * D:3 * D].transpose(1, 2),
            W0[:, D:2 * D].transpose(1, 2), rates.transpose(1, 2))


def public_state_dict(model) -> dict[str, torch.Tensor]:
    """fwp's parameters and buffers under the names and in the layout of the public
    ``StatefulConvSRWMModel.state_dict()`` (views: gradients reach fwp's parameters)."""
    P: dict[str, torch.Tensor] = {}
    net = list(model.backbone.net)
    for i in range(4):
        conv, bn = net[5 * i], net[5 * i + 1]
        P.update({f"conv_layers.{i}.0.weight": conv.weight, f"conv_layers.{i}.0.bias": conv.bias})
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            P[f"conv_layers.{i}.1.{name}"] = getattr(bn, name)
    P.update({"input_proj.weight": model.input.weight, "input_proj.bias": model.input.bias,
              "out_layer.weight": model.head.weight, "out_layer.bias": model.head.bias})
    for b, block in enumerate(model.core.blocks):
        srwm, ff = f"fw_layers.{b}", f"ff_layers.{b}"
        for name, w in zip(("W_y", "W_q", "W_k", "w_b"), public_weights(block.layer)):
            P[f"{srwm}.{name}"] = w.unsqueeze(0)
        P[f"{srwm}.out_linear.weight"] = block.layer.out.weight
        norm, first, _, _, second, _ = block.ff.net
        for name in ("weight", "bias"):
            P[f"{srwm}.layer_norm.{name}"] = getattr(block.norm, name)
            P[f"{ff}.layer_norm.{name}"] = getattr(norm, name)
            P[f"{ff}.ff_layers.0.{name}"] = getattr(first, name)
            P[f"{ff}.ff_layers.3.{name}"] = getattr(second, name)
    return P


def public_srwm(x: torch.Tensor, weights: list[torch.Tensor]) -> tuple[torch.Tensor, list]:
    """The kernel's recurrence. x ``[B, H, L, D]``; weights W_y, W_q, W_k ``[B, H, D, D]`` and
    w_b ``[B, H, D, 4]`` indexed [input e, output m]. Returns y ``[B, H, L, D]`` (read with the
    weights before the step's update) and the final weights."""
    Wy, Wq, Wk, wb = weights
    ys = []
    for t in range(x.shape[2]):
        xt = x[:, :, t]

        def read(W, v):
            return torch.einsum("bhem,bhe->bhm", W, v)

        y, q, k = read(Wy, xt), torch.softmax(read(Wq, xt), -1), torch.softmax(read(Wk, xt), -1)
        b = torch.sigmoid(read(wb, xt))
        inserts = [b[..., i:i + 1] * (read(W, q) - read(W, k)) for i, W in enumerate(
            (Wy, Wq, Wk, wb))]
        Wy, Wq, Wk, wb = (W + k.unsqueeze(-1) * u.unsqueeze(-2)
                          for W, u in zip((Wy, Wq, Wk, wb), inserts))
        ys.append(y)
    return torch.stack(ys, 2), [Wy, Wq, Wk, wb]


def public_srwm_layer(P: dict, name: str, h: torch.Tensor,
                      shift: list | None) -> tuple[torch.Tensor, list]:
    """``SRWMlayer.forward(h, state, get_state=True)`` with use_ln: raw h into the SRWM,
    LN(h) + Drop(out_linear(y)); the state in and out is the shift from the base weights."""
    L, B, _ = h.shape
    _, H, D, _ = P[f"{name}.W_y"].shape
    x = h.reshape(L, B, H, D).permute(1, 2, 0, 3)
    base = [P[f"{name}.{w}"].expand(B, -1, -1, -1) for w in ("W_y", "W_q", "W_k", "w_b")]
    start = base if shift is None else [s + w for s, w in zip(shift, base)]
    y, final = public_srwm(x, start)
    y = y.transpose(1, 2).reshape(B, L, -1).transpose(0, 1)
    out = F.layer_norm(h, h.shape[-1:], P[f"{name}.layer_norm.weight"],
                       P[f"{name}.layer_norm.bias"]) + F.linear(y, P[f"{name}.out_linear.weight"])
    return out, [w - b for w, b in zip(final, base)]


def public_feed_forward(P: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    """``TransformerFFlayers``: x + Drop(Lin(Drop(ReLU(Lin(LN x)))))."""
    normed = F.layer_norm(x, x.shape[-1:], P[f"{name}.layer_norm.weight"],
                          P[f"{name}.layer_norm.bias"])
    inner = F.relu(F.linear(normed, P[f"{name}.ff_layers.0.weight"],
                            P[f"{name}.ff_layers.0.bias"]))
    return x + F.linear(inner, P[f"{name}.ff_layers.3.weight"], P[f"{name}.ff_layers.3.bias"])


def public_conv4(P: dict, images: torch.Tensor, training: bool) -> torch.Tensor:
    """4 × [conv 3×3 → BatchNorm → MaxPool 2 → ReLU]; BatchNorm with the batch's statistics in
    training mode, the running ones in eval mode."""
    x = images
    for i in range(4):
        x = F.conv2d(x, P[f"conv_layers.{i}.0.weight"], P[f"conv_layers.{i}.0.bias"], padding=1)
        bn = {name: P[f"conv_layers.{i}.1.{name}"] for name in ("weight", "bias")}
        stats = [None, None] if training else [P[f"conv_layers.{i}.1.running_{s}"]
                                               for s in ("mean", "var")]
        x = F.batch_norm(x, *stats, **bn, training=training, eps=1e-5)
        x = F.relu(F.max_pool2d(x, 2))
    return x.flatten(1)


def public_model(P: dict, images: torch.Tensor, label_inputs: torch.Tensor,
                 state: list | None = None, training: bool = True) -> tuple[torch.Tensor, list]:
    """``StatefulConvSRWMModel.forward`` of the state dict ``P``: images ``[L, B, C, H, W]`` and
    label inputs ``[L, B, N]`` (the one-hot feedback) → logits ``[L, B, N]`` and the per-layer
    shifts."""
    L, B = images.shape[:2]
    features = public_conv4(P, images.flatten(0, 1), training).reshape(L, B, -1)
    out = F.linear(torch.cat([features, label_inputs], -1), P["input_proj.weight"],
                   P["input_proj.bias"])
    shifts = []
    for i in range(sum(k.endswith(".W_y") for k in P)):
        out, shift = public_srwm_layer(P, f"fw_layers.{i}", out,
                                       None if state is None else state[i])
        shifts.append(shift)
        out = public_feed_forward(P, f"ff_layers.{i}", out)
    return F.linear(out, P["out_layer.weight"], P["out_layer.bias"]), shifts


def public_bootstrap_step(model, e, n_way: int, beta2: float, kl: bool):
    """One step of ``main_few_shot_sync_bootstrapping.py``: support, query, extra and query
    again in separate calls; loss β1·CE + β2·(KL or Σ MSE of the shifts) + β3·CE (β1 = β3 = 1)."""
    def onehot(labels):
        return F.one_hot(labels.T, n_way).double()

    support, query = e.support_images.transpose(0, 1), e.query_images[:, :1].transpose(0, 1)
    extra = e.extra_images.transpose(0, 1)
    no_label = torch.zeros(1, query.shape[1], n_way, dtype=torch.float64)
    P = public_state_dict(model)
    _, support_state = public_model(P, support, onehot(e.support_labels))
    logits, _ = public_model(P, query, no_label, support_state)
    _, extra_state = public_model(P, extra, onehot(e.extra_labels), support_state)
    extra_logits, _ = public_model(P, query, no_label, extra_state)
    targets = e.query_labels[:, 0]
    logits, extra_logits = logits[0], extra_logits[0]
    if kl:
        distill = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(extra_logits, -1).detach(),
                           reduction="batchmean", log_target=True)
    else:
        distill = sum(F.mse_loss(s, f.detach()) for layer_s, layer_f in zip(
            support_state, extra_state) for s, f in zip(layer_s, layer_f))
    loss = (F.cross_entropy(logits, targets) + beta2 * distill
            + F.cross_entropy(extra_logits, targets))
    return logits, extra_logits, loss


@pytest.fixture(scope="module")
def episodes(tiny_root):
    dataset = load_dataset("folder", tiny_root, split="train")
    return dataset, EpisodeSampler(dataset, 3, 2, n_query=1, k_extra=2, seed=11).sample(3)


def _grads(model) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("distill", ["kl", "weights"])
def test_bootstrapped_step_equals_public_code(tiny_root, episodes, distill):
    dataset, e = episodes
    e = type(e)(**{k: (v.double() if v.is_floating_point() else v) for k, v in vars(e).items()})
    config = tiny_config(tiny_root, **PUBLIC, separate_backbone_calls=True, single_query=True,
                         beta2=5.0, beta3=1.0, distill=distill)
    torch.manual_seed(0)
    model = FewShotLearner(config, dataset.image_shape).double().train()
    for block in model.core.blocks:  # a trained-looking β block: rates away from ½
        block.layer.W0.data[:, -4:] += torch.randn_like(block.layer.W0[:, -4:])

    logits, extra_logits, loss = public_bootstrap_step(model, e, 3, 5.0, distill == "kl")
    loss.backward()
    expected = _grads(model)

    out = model(e.support_images, e.support_labels, e.query_images[:, :1], e.extra_images,
                e.extra_labels)
    ours, _ = bootstrap_loss(out.student_logits, e.query_labels[:, :1], out.teacher_logits,
                             beta1=1.0, beta2=5.0, beta3=1.0, distill=distill,
                             student_state=out.student_shifts, teacher_state=out.teacher_shifts)
    ours.backward()
    torch.testing.assert_close(out.student_logits[:, 0], logits)
    torch.testing.assert_close(out.teacher_logits[:, 0], extra_logits)
    torch.testing.assert_close(ours, loss)
    for (name, _), got, want in zip(model.named_parameters(), _grads(model), expected):
        torch.testing.assert_close(got, want, msg=name)


def test_plain_step_equals_public_sync_script(tiny_root, episodes):
    """``main_few_shot_sync.py``: support and query as one sequence in one call, the query's
    prediction read at the last position."""
    dataset, e = episodes
    config = tiny_config(tiny_root, **PUBLIC, single_query=True, k_extra=0)
    torch.manual_seed(1)
    model = FewShotLearner(config, dataset.image_shape).double().train()
    support, query = e.support_images.double(), e.query_images[:, :1].double()
    images = torch.cat([support, query], 1).transpose(0, 1)
    labels = torch.cat([F.one_hot(e.support_labels, 3).double(),
                        torch.zeros(len(e), 1, 3, dtype=torch.float64)], 1).transpose(0, 1)
    logits, _ = public_model(public_state_dict(model), images, labels)
    F.cross_entropy(logits[-1], e.query_labels[:, 0]).backward()
    expected = _grads(model)

    out = model(support, e.support_labels, query)
    F.cross_entropy(out.student_logits[:, 0], e.query_labels[:, 0]).backward()
    torch.testing.assert_close(out.student_logits[:, 0], logits[-1])
    for (name, _), got, want in zip(model.named_parameters(), _grads(model), expected):
        torch.testing.assert_close(got, want, msg=name)


def test_public_architecture_differs_from_the_ln_input_block(tiny_root, episodes):
    """The check above can fail: fwp's LN-input block gives other outputs on the same weights."""
    dataset, e = episodes
    torch.manual_seed(0)
    public = FewShotLearner(tiny_config(tiny_root, **PUBLIC), dataset.image_shape).double()
    normed = FewShotLearner(tiny_config(tiny_root, **{**PUBLIC, "residual": "normed"}),
                            dataset.image_shape).double()
    normed.load_state_dict(public.state_dict())
    support = e.support_images.double()
    a = public.observe(support, e.support_labels)
    b = normed.observe(support, e.support_labels)
    assert not torch.allclose(a[0], b[0])
