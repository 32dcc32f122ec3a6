"""Batched, per-sample training augmentation on uint8 image batches, on whatever device holds them.

Works on whole batches with torch ops (roi_align crops) so a 2-core CPU spends
its time in the model, not in per-image Python loops, and a GPU augments its
own batch instead of waiting on the host. Every random draw comes from the
caller's generator on that generator's own device, so a CUDA generator draws on
the GPU (no host round trip) and a CPU generator gives today's CPU streams
bit for bit. Output stays uint8, the values the serving path would see, and is
normalised afterwards (training/batches.py).
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import roi_align


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """n draws in [low, high) on the generator's device, then where the images are."""
    draws = torch.empty(n, device=generator.device).uniform_(low, high, generator=generator)
    return draws.to(device, non_blocking=True)


def crop_boxes(
    n: int, height: int, width: int, scale_min: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """roi_align boxes (index, x0, y0, x1, y1): area in [scale_min, 1] of the image, aspect in [3/4, 4/3]."""
    area = _uniform(n, scale_min, 1.0, generator, device)
    ratio = torch.exp(_uniform(n, math.log(3 / 4), math.log(4 / 3), generator, device))
    crop_w = (torch.sqrt(area * ratio) * width).clamp(max=width)
    crop_h = (torch.sqrt(area / ratio) * height).clamp(max=height)
    x0 = _uniform(n, 0.0, 1.0, generator, device) * (width - crop_w)
    y0 = _uniform(n, 0.0, 1.0, generator, device) * (height - crop_h)
    index = torch.arange(n, dtype=torch.float32, device=device)
    return torch.stack([index, x0, y0, x0 + crop_w, y0 + crop_h], dim=1)


def random_resized_crop(
    images: torch.Tensor, scale_min: float, generator: torch.Generator, out_size: int | None = None
) -> torch.Tensor:
    """Per-sample crop (crop_boxes), resized to out_size (default: input size).

    images: float NCHW. Returns N x C x out_size x out_size.
    """
    n, _, height, width = images.shape
    boxes = crop_boxes(n, height, width, scale_min, generator, images.device)
    size = (height, width) if out_size is None else (out_size, out_size)
    return roi_align(images, boxes, output_size=size, aligned=True)


def flip_mask(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Which samples to mirror: each with probability 0.5."""
    return _uniform(n, 0.0, 1.0, generator, device) < 0.5


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = flip_mask(images.shape[0], generator, images.device)
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def jitter_factors(n: int, strength: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Per-sample brightness, contrast and saturation factors, each in [1-s, 1+s]: shape 3 x N x 1 x 1 x 1."""
    draws = [_uniform(n, 1 - strength, 1 + strength, generator, device) for _ in range(3)]
    return torch.stack(draws)[:, :, None, None, None]


def colour_jitter(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Brightness, then contrast about the image's mean grey, then saturation about each pixel's grey."""
    brightness, contrast, saturation = jitter_factors(images.shape[0], strength, generator, images.device)
    images = images * brightness
    mean = _grey(images).mean(dim=(2, 3), keepdim=True)
    images = mean + (images - mean) * contrast
    grey = _grey(images)
    return grey + (images - grey) * saturation


def _grey(images: torch.Tensor) -> torch.Tensor:
    return (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).unsqueeze(1)


def augment(
    images: torch.Tensor, scale_min: float, jitter: float, generator: torch.Generator, out_size: int | None = None
) -> torch.Tensor:
    """uint8 NHWC -> augmented uint8 NHWC, out_size square (default: input size), on the images' device."""
    x = images.permute(0, 3, 1, 2).float()
    x = random_resized_crop(x, scale_min, generator, out_size)
    x = random_flip(x, generator)
    if jitter > 0:
        x = colour_jitter(x, jitter, generator)
    return x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)
