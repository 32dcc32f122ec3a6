"""Batched augmentation's random draws: ranges, rates and reproducibility, on the CPU and (where present) CUDA."""

from __future__ import annotations

import pytest
import torch

from training import distributed
from training.augment import augment, crop_boxes, flip_mask, jitter_factors

SCALE_MIN, JITTER, DRAWS = 0.35, 0.2, 20_000
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; the CPU tests cover the rest")


def _generator(device: str, seed: int = 0) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _images(device: str, n: int = 8, size: int = 40) -> torch.Tensor:
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=_generator("cpu")).to(device)


def draw_statistics(device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Many draws of each random choice augment() makes, on `device`, as CPU tensors."""
    generator = _generator(device, seed)
    height, width = 30, 40
    boxes = crop_boxes(DRAWS, height, width, SCALE_MIN, generator, torch.device(device)).cpu()
    crop_w, crop_h = boxes[:, 3] - boxes[:, 1], boxes[:, 4] - boxes[:, 2]
    return {
        "boxes": boxes,
        "area": crop_w * crop_h / (height * width),
        "aspect": (crop_w / width) / (crop_h / height),
        "flips": flip_mask(DRAWS, generator, torch.device(device)).cpu().float(),
        "jitter": jitter_factors(DRAWS, JITTER, generator, torch.device(device)).cpu().flatten(),
    }


def test_crops_cover_between_scale_min_and_the_whole_image_and_stay_inside_it() -> None:
    stats = draw_statistics("cpu")
    area, boxes = stats["area"], stats["boxes"]
    assert area.min() >= SCALE_MIN - 1e-6 and area.max() <= 1 + 1e-6
    assert area.min() < SCALE_MIN + 0.01 and area.max() > 0.99, "the whole [scale_min, 1] range is used"
    assert (boxes[:, 1:3] >= 0).all() and (boxes[:, 3] <= 40 + 1e-4).all() and (boxes[:, 4] <= 30 + 1e-4).all()
    unclamped = area < 0.7  # below that neither side hits the image border
    assert stats["aspect"][unclamped].min() >= 3 / 4 - 1e-4 and stats["aspect"][unclamped].max() <= 4 / 3 + 1e-4


def test_each_sample_is_mirrored_with_probability_one_half() -> None:
    rate = draw_statistics("cpu")["flips"].mean().item()
    assert abs(rate - 0.5) < 0.015  # 4.2 standard errors at 20,000 draws


def test_jitter_factors_fill_one_plus_minus_strength_and_no_more() -> None:
    factors = draw_statistics("cpu")["jitter"]
    assert factors.min() >= 1 - JITTER and factors.max() <= 1 + JITTER
    assert factors.min() < 1 - JITTER + 0.01 and factors.max() > 1 + JITTER - 0.01


def test_augment_draws_on_the_generators_device_and_returns_the_requested_size() -> None:
    out = augment(_images("cpu"), SCALE_MIN, JITTER, _generator("cpu"), out_size=32)
    assert out.shape == (8, 32, 32, 3) and out.dtype == torch.uint8 and out.device.type == "cpu"


def test_augment_is_reproducible_for_a_seed_on_the_cpu() -> None:
    images = _images("cpu")
    first = augment(images, SCALE_MIN, JITTER, _generator("cpu", 3), 32)
    assert torch.equal(first, augment(images, SCALE_MIN, JITTER, _generator("cpu", 3), 32))
    assert not torch.equal(first, augment(images, SCALE_MIN, JITTER, _generator("cpu", 4), 32))


@CUDA
def test_augment_runs_on_cuda_with_a_cuda_generator_and_is_reproducible_there() -> None:
    images = _images("cuda")
    generator = distributed.augmentation_generator(0, 0, 0, "cuda")
    first = augment(images, SCALE_MIN, JITTER, generator, 32)
    assert first.device.type == "cuda" and first.shape == (8, 32, 32, 3)
    again = augment(images, SCALE_MIN, JITTER, distributed.augmentation_generator(0, 0, 0, "cuda"), 32)
    assert torch.equal(first, again)


@CUDA
def test_cuda_draws_match_the_cpu_draws_in_distribution() -> None:
    cpu, cuda = draw_statistics("cpu"), draw_statistics("cuda")
    assert not torch.equal(cpu["flips"], cuda["flips"]), "the two devices have their own streams"
    for stats in (cpu, cuda):
        assert stats["area"].min() >= SCALE_MIN - 1e-6 and stats["area"].max() <= 1 + 1e-6
        assert stats["jitter"].min() >= 1 - JITTER and stats["jitter"].max() <= 1 + JITTER
    # Means of 20,000 draws: a few standard errors apart at most.
    assert abs(cpu["area"].mean() - cuda["area"].mean()) < 0.01
    assert abs(cpu["aspect"].log().mean() - cuda["aspect"].log().mean()) < 0.01
    assert abs(cpu["flips"].mean() - cuda["flips"].mean()) < 0.02
    assert abs(cpu["jitter"].mean() - cuda["jitter"].mean()) < 0.005
    assert abs(cpu["jitter"].std() - cuda["jitter"].std()) < 0.005
