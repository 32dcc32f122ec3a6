"""Batched, per-sample training augmentation on uint8 image batches.

Works on whole batches with torch ops (roi_align crops) so a 2-core CPU spends
its time in the model, not in per-image Python loops. Output stays uint8 so
that normalisation goes through the one preprocessing contract.
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import roi_align


def random_resized_crop(
    images: torch.Tensor, scale_min: float, generator: torch.Generator, out_size: int | None = None
) -> torch.Tensor:
    """Per-sample crop of area in [scale_min, 1], aspect in [3/4, 4/3], resized to out_size (default: input size).

    images: float NCHW. Returns N x C x out_size x out_size.
    """
    n, _, height, width = images.shape
    area = torch.empty(n).uniform_(scale_min, 1.0, generator=generator)
    log_ratio = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)
    ratio = torch.exp(log_ratio)
    crop_w = (torch.sqrt(area * ratio) * width).clamp(max=width)
    crop_h = (torch.sqrt(area / ratio) * height).clamp(max=height)
    x0 = torch.rand(n, generator=generator) * (width - crop_w)
    y0 = torch.rand(n, generator=generator) * (height - crop_h)
    boxes = torch.stack([torch.arange(n, dtype=torch.float32), x0, y0, x0 + crop_w, y0 + crop_h], dim=1)
    size = (height, width) if out_size is None else (out_size, out_size)
    return roi_align(images, boxes.to(images.device), output_size=size, aligned=True)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def colour_jitter(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation, each a per-sample factor in [1-s, 1+s]."""
    n = images.shape[0]

    def factors() -> torch.Tensor:
        values = torch.empty(n).uniform_(1 - strength, 1 + strength, generator=generator)
        return values.to(images.device)[:, None, None, None]

    images = images * factors()
    mean = _grey(images).mean(dim=(2, 3), keepdim=True)
    images = mean + (images - mean) * factors()
    grey = _grey(images)
    return grey + (images - grey) * factors()


def _grey(images: torch.Tensor) -> torch.Tensor:
    return (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).unsqueeze(1)


def augment(
    images: torch.Tensor, scale_min: float, jitter: float, generator: torch.Generator, out_size: int | None = None
) -> torch.Tensor:
    """uint8 NHWC -> augmented uint8 NHWC, out_size square (default: input size)."""
    x = images.permute(0, 3, 1, 2).float()
    x = random_resized_crop(x, scale_min, generator, out_size)
    x = random_flip(x, generator)
    if jitter > 0:
        x = colour_jitter(x, jitter, generator)
    return x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)
