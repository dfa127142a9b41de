"""In-context learning of a synthetic N-way K-shot task: the layers learn what they should.

Each episode draws N random class prototypes in R^16; the support set is N·K noisy copies with
their one-hot labels, the query one more noisy copy with an all-zero label. Chance is 1/N.
These are the settings that decide whether a few-shot learner leaves the chance-level plateau
quickly (``docs/fewshot.md``): the SRWM with its key block initialised near c·I and the DeltaNet
with L2-normalised keys both learn the task in a few hundred steps.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fwp.layers import LayerStack

N, K, DIM = 5, 2, 16


def episodes(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    prototypes = torch.randn(batch, N, DIM, generator=generator)
    labels = torch.stack([torch.randperm(N * K, generator=generator) % N for _ in range(batch)])
    noise = 0.5 * torch.randn(batch, N * K + 1, DIM, generator=generator)
    query = torch.randint(0, N, (batch,), generator=generator)
    images = torch.cat([prototypes.gather(1, labels[..., None].expand(-1, -1, DIM)),
                        prototypes[torch.arange(batch), query][:, None]], 1) + noise
    label_input = torch.cat([F.one_hot(labels, N).float(), torch.zeros(batch, 1, N)], 1)
    return torch.cat([images, label_input], -1), query


def query_accuracy_after_training(name: str, options: dict, steps: int) -> float:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    embed, head = nn.Linear(DIM + N, 32), nn.Linear(32, N)
    core = LayerStack([name] * 2, 32, 2, 64, residual="normed", layer_options={name: options})
    model = nn.ModuleList([embed, core, head])
    optimiser = torch.optim.Adam(model.parameters(), 3e-3, betas=(0.9, 0.995))

    def logits(x: torch.Tensor) -> torch.Tensor:
        return head(core(embed(x))[0][:, -1])

    for _ in range(steps):
        x, y = episodes(32, generator)
        loss = F.cross_entropy(logits(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        x, y = episodes(500, generator)
        return (logits(x).argmax(-1) == y).float().mean().item()


@pytest.mark.slow
@pytest.mark.parametrize("name, options", [
    ("srwm", {"key_identity": 3.0}),
    ("deltanet", {"feature_map": "l2"}),
])
def test_learns_the_synthetic_task_in_a_few_hundred_steps(name, options):
    assert query_accuracy_after_training(name, options, steps=300) > 0.6
