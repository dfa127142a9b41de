"""Whether a few-shot configuration is sized for a CPU: the work of its training run, counted,
against that of ``--preset demo`` (1,000 steps, about 8 minutes on one CPU thread)."""

from __future__ import annotations

import torch
from torch import nn

from fwp.fewshot.config import RunConfig, from_dict, preset
from fwp.fewshot.model import FewShotLearner

# More than this many times the demo's training work: hours to weeks on a CPU.
GPU_SIZED = 20.0


def step_work(
    config: RunConfig, image_shape: tuple[int, int, int], model: FewShotLearner | None = None
) -> float:
    """Multiply-adds of one training step's forward pass (the backward costs about twice that).

    Backbone: every convolution's multiply-adds on each image of the step. Sequence part: one
    per weight of the input, core and head layers for each token, four per entry of an SRWM's
    W0 (its read W x, the two value reads W φ(q), W φ(k) and the update). ``model``: the
    learner of ``config`` if already built.
    """
    model = model or FewShotLearner(config, image_shape)
    conv = 0

    def count(module: nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal conv
        kh, kw = module.kernel_size
        conv += output.numel() * module.in_channels // module.groups * kh * kw

    hooks = [m.register_forward_hook(count) for m in model.backbone.modules()
             if isinstance(m, nn.Conv2d)]
    training = model.backbone.training
    with torch.no_grad():
        model.backbone.eval()
        model.backbone(torch.zeros(1, *image_shape))
    model.backbone.train(training)
    for hook in hooks:
        hook.remove()
    per_token = sum(p.numel() for name, p in model.named_parameters()
                    if not name.startswith("backbone."))
    per_token += sum(3 * block.layer.W0.numel() for block in model.core.blocks
                     if hasattr(block.layer, "W0"))
    data = config.data
    queries = 1 if data.single_query else data.n_way * data.n_query
    extra = data.n_way * config.k_extra_used
    images = data.n_way * data.k_shot + extra + queries * (
        2 if extra and config.network.separate_backbone_calls else 1)
    tokens = data.n_way * data.k_shot + extra + queries * (2 if extra else 1)
    episodes = config.optim.batch_size * config.optim.accumulate
    return float(episodes * (images * conv + tokens * per_token))


def gpu_notice(
    config: RunConfig, image_shape: tuple[int, int, int], model: FewShotLearner | None = None
) -> str | None:
    """A line for a CPU run whose training is far more work than the demo's (steps × work per
    step), naming the preset to use instead; None when the configuration is CPU-sized."""
    demo = from_dict(preset("demo"))
    ratio = (config.steps * step_work(config, image_shape, model)
             / (demo.steps * step_work(demo, (1, 28, 28))))
    if ratio <= GPU_SIZED:
        return None
    return (
        f"fwp: this configuration is sized for a GPU: its {config.steps:,} steps are about "
        f"{ratio:,.0f}× the work of --preset demo's {demo.steps:,} (about 8 minutes on one CPU "
        f"thread). On a CPU, start from --preset demo (e.g. --preset demo --dataset omniglot "
        f"--data-root DIR); on a GPU machine, --device cuda."
    )
