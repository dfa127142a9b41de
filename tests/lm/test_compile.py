"""torch.compile: a language-model training step of every registered layer compiles as one graph
(fullgraph=True) on CPU and matches eager, loss and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fwp.layers import LAYERS
from fwp.lm.model import FwpLM, LMSpec


def loss_and_grads(model: FwpLM, tokens: torch.Tensor, step) -> tuple[torch.Tensor, list]:  # noqa: ANN001
    model.zero_grad()
    loss = step(tokens)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def lm_step(model: FwpLM):  # noqa: ANN201
    def step(tokens: torch.Tensor) -> torch.Tensor:
        _, state = model(tokens[:, :5])  # read in two pieces: the state path is compiled too
        logits, _ = model(tokens[:, 5:-1], state)
        return F.cross_entropy(logits.flatten(0, 1), tokens[:, 6:].flatten())
    return step


CONTINUOUS = ("continuous-time layers check their input's values in Python and solve ODEs "
              "with torchdiffeq, whose step control branches on tensor values: no single graph")
KNOWN_FAILURES = {
    # The layer traces, but AOTAutograd's backward of the chunked gated delta rule then fails
    # with "view size is not compatible" (torch 2.13; the operator alone compiles): open.
    "gated_deltanet": "AOTAutograd backward of the chunked gated delta rule",
    "ct_hebb": CONTINUOUS, "ct_oja": CONTINUOUS, "ct_delta": CONTINUOUS, "ncde": CONTINUOUS,
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_layer_compiles_as_one_graph_and_matches_eager(name):
    if name in KNOWN_FAILURES:
        pytest.xfail(KNOWN_FAILURES[name])
    torch._dynamo.reset()
    model = FwpLM(LMSpec(13, [name], d_model=16, n_heads=2, d_ff=24))
    tokens = torch.randint(0, 13, (2, 12))
    eager_loss, eager_grads = loss_and_grads(model, tokens, lm_step(model))
    # aot_eager: Dynamo's full graph and AOTAutograd's fake-tensor tracing (what needs the fake
    # implementations and the registered autograd), without Inductor's slow C++ code generation.
    compiled = torch.compile(lm_step(model), fullgraph=True, backend="aot_eager")
    loss, grads = loss_and_grads(model, tokens, compiled)
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-5)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_inductor_compiles_a_deltanet_and_srwm_model():
    torch._dynamo.reset()
    model = FwpLM(LMSpec(13, ["deltanet", "srwm"], d_model=16, n_heads=2, d_ff=24))
    tokens = torch.randint(0, 13, (2, 12))
    eager_loss, eager_grads = loss_and_grads(model, tokens, lm_step(model))
    loss, grads = loss_and_grads(model, tokens, torch.compile(lm_step(model), fullgraph=True))
    torch.testing.assert_close(loss, eager_loss, rtol=1e-4, atol=1e-5)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e, rtol=1e-3, atol=1e-5)
