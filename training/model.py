"""The networks `model.arch` picks, and the exported wrapper around them.

Every net takes the normalised float NCHW tensor that service.preprocessing.normalize
produces and returns logits.

- `cnn`: a compact residual CNN trained from scratch. Three stages halve the
  resolution and double the width; each stage is conv -> residual conv pair.
- `efficientnet_lite0`: EfficientNet-Lite0 (training/efficientnet_lite.py) with a
  new head, from ImageNet weights when `model.pretrained`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from training import efficientnet_lite
from training.errors import ParamsError

ARCHS = ("cnn", "efficientnet_lite0")


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


def build_model(
    num_classes: int,
    width: int = 16,
    dropout: float = 0.1,
    *,
    arch: str = "cnn",
    pretrained: bool = False,
    frozen_blocks: int = 0,
) -> nn.Module:
    """The `model` section of params.yaml as a module. `width` is the cnn's; the rest apply to efficientnet_lite0."""
    if arch == "cnn":
        if pretrained or frozen_blocks:
            raise ParamsError(
                "model.arch cnn trains from scratch: set model.pretrained false and model.frozen_blocks 0"
            )
        return CatsDogsNet(num_classes, width, dropout)
    if arch == "efficientnet_lite0":
        return efficientnet_lite.build(num_classes, dropout, pretrained, frozen_blocks)
    raise ParamsError(f"model.arch must be one of {ARCHS}, got {arch!r}")


def model_from_checkpoint(checkpoint: dict[str, Any]) -> nn.Module:
    """The trained net a checkpoint holds, rebuilt from its recorded `model` params (no ImageNet download)."""
    spec = checkpoint["model"]
    net = build_model(len(checkpoint["classes"]), spec["width"], spec["dropout"], arch=spec["arch"])
    net.load_state_dict(checkpoint["state_dict"])
    return net


def parameter_groups(model: nn.Module, pretrained: bool, lr: float, backbone_lr: float) -> list[dict[str, Any]]:
    """Fresh layers learn at `lr`; ImageNet layers at `backbone_lr`, so fine-tuning adapts, not overwrites, them."""
    head, backbone = [], []
    for name, parameter in model.named_parameters():
        fresh = not pretrained or name.startswith("classifier.")
        (head if fresh else backbone).append(parameter)
    groups = [{"params": head, "lr": lr}]
    if backbone:
        groups.append({"params": backbone, "lr": backbone_lr})
    return groups


def pretrained_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    return (p for name, p in model.named_parameters() if not name.startswith("classifier."))


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
