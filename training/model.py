"""A compact residual CNN, trained from scratch.

Takes the normalised float NCHW tensor that service.preprocessing.normalize
produces and returns logits. Three stages halve the resolution and double
the width; each stage is conv -> residual conv pair, so a 64 px input ends
as a 4x4 map that global pooling turns into one vector.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(_conv_bn(c_in, c_out), nn.MaxPool2d(2), Residual(c_out))


class CatsDogsNet(nn.Module):
    def __init__(self, num_classes: int, width: int, dropout: float) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(3, width),
            nn.MaxPool2d(2),
            _stage(width, 2 * width),
            _stage(2 * width, 4 * width),
            _stage(4 * width, 8 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(8 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(num_classes: int, width: int, dropout: float) -> nn.Module:
    return CatsDogsNet(num_classes, width, dropout)


class WithSoftmax(nn.Module):
    """What gets exported: probabilities, so every client reads the same numbers.

    flip_tta averages each image's probabilities with its mirror image's. Both views
    go through the net as one batch of 2N, so the ONNX graph stays a single call.
    """

    def __init__(self, net: nn.Module, flip_tta: bool = False) -> None:
        super().__init__()
        self.net = net
        self.flip_tta = flip_tta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.flip_tta:
            return torch.softmax(self.net(x), dim=1)
        probabilities = torch.softmax(self.net(torch.cat([x, x.flip(3)])), dim=1)
        return probabilities.view(2, x.shape[0], -1).mean(0)
