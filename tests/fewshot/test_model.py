"""The learner: stateful equality, independent queries, and learning on a tiny task per core."""

from __future__ import annotations

import pytest
import torch

from fwp.data import EpisodeSampler, load_dataset
from fwp.errors import UserError
from fwp.fewshot.losses import bootstrap_loss
from fwp.fewshot.model import FewShotLearner
from fwp.layers import clone_state
from fwp.layers.state import map_state
from fwp.ops import get_feature_map

from .conftest import tiny_config

CORES = ["srwm", "deltanet", "linear", "lstm", "transformer"]


def _tensors(state):
    out = []
    map_state(lambda t: out.append(t) or t, state)
    return out


def test_network_options_reach_the_layers(tiny_root):
    srwm = FewShotLearner(tiny_config(tiny_root, model="srwm", key_identity=2.0, beta_init=1.0,
                                      n_beta=4), (1, 28, 28))
    layer = srwm.core.blocks[0].layer
    D = layer.head_dim
    assert layer.n_beta == 4 and abs(layer.W0[:, -4:].mean().item() - 1.0) < 0.5
    assert abs(torch.diagonal(layer.W0[:, D : 2 * D], dim1=-2, dim2=-1).mean().item() - 2.0) < 0.5
    deltanet = FewShotLearner(tiny_config(tiny_root, model="deltanet", feature_map="l2"),
                              (1, 28, 28))
    x = torch.randn(3, 8)
    torch.testing.assert_close(deltanet.core.blocks[0].layer.phi(x),
                               torch.nn.functional.normalize(x, dim=-1))


def test_layer_options_reach_any_layer_and_win_over_named_flags(tiny_root):
    def layer(**changes):
        return FewShotLearner(tiny_config(tiny_root, **changes), (1, 28, 28)).core.blocks[0].layer

    assert layer(model="deltadelta", layer_options={"chunk_size": 8}).chunk_size == 8
    assert layer(model="srwm", n_beta=4, layer_options={"n_beta": 1}).n_beta == 1
    x = torch.randn(3, 8)  # linear gets the config's feature map, not the layer's own default
    torch.testing.assert_close(layer(model="linear").phi(x), get_feature_map("elu+1_sum")(x))
    with pytest.raises(UserError, match="layer lstm takes no option 'no_such'"):
        layer(model="lstm", layer_options={"no_such": 1})


@pytest.fixture(scope="module")
def episode(tiny_root):
    dataset = load_dataset("folder", tiny_root, split="train")
    return dataset, EpisodeSampler(dataset, 3, 2, n_query=2, k_extra=2, seed=3).sample(2)


@pytest.mark.parametrize("core", CORES)
def test_pieces_equal_whole(tiny_root, episode, core):
    """State after support, cloned and continued with the extra examples, equals the state of
    the concatenated sequence; predictions from it match; predicting does not touch the state."""
    dataset, e = episode
    torch.manual_seed(0)
    model = FewShotLearner(tiny_config(tiny_root, model=core), dataset.image_shape).double().eval()
    support, extra = e.support_images.double(), e.extra_images.double()
    queries = e.query_images.double()
    whole = model.observe(torch.cat([support, extra], 1),
                          torch.cat([e.support_labels, e.extra_labels], 1))
    first = model.observe(support, e.support_labels)
    kept = clone_state(first)
    pieces = model.observe(extra, e.extra_labels, clone_state(first))
    for a, b in zip(_tensors(whole), _tensors(pieces)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(model.predict(queries, whole), model.predict(queries, pieces))
    for a, b in zip(_tensors(first), _tensors(kept)):
        assert torch.equal(a, b), "observing from a clone changed the original state"
    together = model.predict(queries, first)
    alone = torch.cat([model.predict(queries[:, q : q + 1], first)
                       for q in range(queries.shape[1])], 1)
    torch.testing.assert_close(together, alone)
    for a, b in zip(_tensors(first), _tensors(kept)):
        assert torch.equal(a, b), "predicting wrote into the state"
    out = model(support, e.support_labels, queries, extra, e.extra_labels)
    torch.testing.assert_close(out.teacher_logits, model.predict(queries, whole))
    torch.testing.assert_close(out.student_logits, together)


@pytest.mark.parametrize("core", CORES)
def test_loss_decreases(tiny_root, core):
    """A few Adam steps on a tiny fixed batch of episodes lower its query loss, for every core."""
    torch.manual_seed(0)
    dataset = load_dataset("folder", tiny_root, split="train")
    model = FewShotLearner(tiny_config(tiny_root, model=core, k_extra=0), dataset.image_shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = EpisodeSampler(dataset, 3, 2, n_query=2, seed=0).sample(8)

    def loss() -> torch.Tensor:
        out = model(batch.support_images, batch.support_labels, batch.query_images)
        return bootstrap_loss(out.student_logits, batch.query_labels)[0]

    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
        losses.append(value.item())
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize("core", ["srwm", "deltanet", "linear"])
def test_bfloat16_autocast_step(tiny_root, episode, core):
    """The training step under bf16 autocast (as on CUDA; here on CPU): finite loss and gradients
    close to float32's, fast weight states kept in float32."""
    dataset, e = episode
    torch.manual_seed(0)
    model = FewShotLearner(tiny_config(tiny_root, model=core), dataset.image_shape).eval()

    def step(amp: bool) -> tuple[torch.Tensor, list[torch.Tensor], list]:
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model(e.support_images, e.support_labels, e.query_images,
                        e.extra_images, e.extra_labels)
            loss, _ = bootstrap_loss(out.student_logits, e.query_labels, out.teacher_logits,
                                     beta1=1.0, beta2=1.0, beta3=1.0)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()], out.student_state

    loss16, grads16, state16 = step(True)
    loss32, grads32, _ = step(False)
    assert torch.isfinite(loss16) and abs(loss16 - loss32) < 0.05 * loss32
    assert all(torch.isfinite(g).all() for g in grads16)
    flat16, flat32 = (torch.cat([g.flatten() for g in grads]) for grads in (grads16, grads32))
    assert torch.nn.functional.cosine_similarity(flat16, flat32, dim=0) > 0.98
    assert all(t.dtype == torch.float32 for t in _tensors(state16))


@pytest.mark.parametrize("name, shape, channels, features", [
    ("conv4", (1, 28, 28), 64, 64),  # Omniglot (the sizes of the public SRWM few-shot code)
    ("conv4", (3, 84, 84), 32, 800),  # Mini-ImageNet
    ("resnet12", (3, 32, 32), 64, 256),
])
def test_backbone_feature_sizes(name, shape, channels, features):
    from fwp.fewshot.backbones import build_backbone

    net, out_dim = build_backbone(name, shape, channels)
    assert out_dim == features
    assert net(torch.zeros(2, *shape)).shape == (2, features)


def test_srwm_flags_are_checked_only_for_a_layer_that_takes_them():
    from fwp.errors import UserError
    from fwp.fewshot.config import RunConfig

    config = RunConfig()
    config.network.model, config.network.n_beta = "deltanet", 3
    config.validate()  # --n-beta does not reach a deltanet: nothing to check
    config.network.model = "srwm"
    with pytest.raises(UserError, match="--n-beta must be 1 or 4"):
        config.validate()
    config.network.n_beta, config.network.layer_options = 1, {"chunk_sise": 8}
    with pytest.raises(UserError, match="takes no option 'chunk_sise'"):
        config.validate()
