"""Image encoders that turn each example of an episode into a feature vector.

Both map ``[B, C, H, W]`` images to ``[B, out_dim]`` features; ``out_dim`` is found by a dry run
on the data set's image shape, so one class serves 28×28×1 Omniglot and 84×84×3 Mini-ImageNet.
Weights and activations are kept channels-last: on a CPU thread the Conv-4's forward+backward of
640 glyph images took 0.33 s instead of 0.59 s (max-pooling and BatchNorm are much faster in
that layout), and it is the layout cuDNN prefers for bfloat16.
"""

from __future__ import annotations

import torch
from torch import nn

from fwp.errors import UserError


class Conv4(nn.Module):
    """4 × [conv 3×3 → BatchNorm → MaxPool 2 → Dropout → ReLU], flattened (Vinyals et al. 2016).

    The order of the public SRWM few-shot code (IDSIA/modern-srwm). Omniglot 28×28×1 with 64
    channels gives 64-d features, Mini-ImageNet 84×84×3 with 32 channels 800-d, the sizes of that
    code and of Irie et al. (ICML 2022).
    """

    def __init__(self, in_channels: int, channels: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [
                nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1),
                nn.BatchNorm2d(channels),
                nn.MaxPool2d(2),
                nn.Dropout(dropout),
                nn.ReLU(),
            ]
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.contiguous(memory_format=torch.channels_last))


class ResidualBlock(nn.Module):
    """3 × [conv 3×3 → BN] with LeakyReLU(0.1), a 1×1 shortcut, then MaxPool 2 (ResNet-12)."""

    def __init__(self, in_channels: int, channels: int, dropout: float) -> None:
        super().__init__()
        convs: list[nn.Module] = []
        for i in range(3):
            convs += [
                nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
            ]
            if i < 2:
                convs.append(nn.LeakyReLU(0.1))
        self.body = nn.Sequential(*convs)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels)
        )
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x) + self.shortcut(x))


class ResNet12(nn.Module):
    """Four residual blocks (channels [64, 96, 128, 256] by default), global average pool."""

    def __init__(
        self,
        in_channels: int,
        channels: tuple[int, ...] = (64, 96, 128, 256),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        blocks, previous = [], in_channels
        for width in channels:
            blocks.append(ResidualBlock(previous, width, dropout))
            previous = width
        self.net = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.contiguous(memory_format=torch.channels_last))


BACKBONES = ("conv4", "resnet12")


def build_backbone(
    name: str, image_shape: tuple[int, int, int], channels: int, dropout: float = 0.0
) -> tuple[nn.Module, int]:
    """The backbone ``name`` for ``(C, H, W)`` images and its feature size.

    ``channels``: Conv-4 width; for ResNet-12 the width of the first block, the others scaled
    as 64 : 96 : 128 : 256.
    """
    in_channels = image_shape[0]
    if name == "conv4":
        net: nn.Module = Conv4(in_channels, channels, dropout)
    elif name == "resnet12":
        widths = tuple(channels * m // 64 for m in (64, 96, 128, 256))
        net = ResNet12(in_channels, widths, dropout)
    else:
        raise UserError(f"unknown backbone {name!r}; choose one of {BACKBONES}")
    if name == "conv4" and min(image_shape[1:]) < 16:
        raise UserError(
            f"Conv-4 halves the image 4 times; {image_shape[1]}x{image_shape[2]} images are too "
            "small (need at least 16x16)"
        )
    with torch.no_grad():
        was_training = net.training
        net.eval()
        out_dim = net(torch.zeros(1, *image_shape)).shape[-1]
        net.train(was_training)
    return net, int(out_dim)
