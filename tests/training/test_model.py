"""Model shapes, the exported softmax wrapper and batched augmentation."""

from __future__ import annotations

import pytest
import torch

from training.augment import augment, colour_jitter, random_flip, random_resized_crop
from training.model import WithSoftmax, build_model


@pytest.mark.parametrize("batch,size", [(1, 32), (5, 64), (3, 96)])
def test_model_maps_any_batch_and_resolution_to_class_logits(batch: int, size: int) -> None:
    model = build_model(num_classes=2, width=8, dropout=0.1).eval()
    assert model(torch.randn(batch, 3, size, size)).shape == (batch, 2)


def test_model_width_sets_parameter_count_and_stays_small() -> None:
    small = sum(p.numel() for p in build_model(2, width=8, dropout=0.0).parameters())
    default = sum(p.numel() for p in build_model(2, width=24, dropout=0.0).parameters())
    assert small < default
    assert default * 4 < 10 * 1024 * 1024, "fp32 weights must fit the 10 MB bundled-model budget"


def test_model_accepts_channels_last_input() -> None:
    model = build_model(2, width=8, dropout=0.0).eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), model(x))


def test_exported_wrapper_returns_probabilities() -> None:
    probabilities = WithSoftmax(build_model(2, width=8, dropout=0.0)).eval()(torch.randn(4, 3, 32, 32))
    assert probabilities.shape == (4, 2)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(4))
    assert (probabilities >= 0).all()


def test_flip_tta_averages_each_image_with_its_mirror() -> None:
    net = build_model(2, width=8, dropout=0.0).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        tta = WithSoftmax(net, flip_tta=True)(x)
        expected = (torch.softmax(net(x), 1) + torch.softmax(net(x.flip(3)), 1)) / 2
        torch.testing.assert_close(tta, expected)
        torch.testing.assert_close(WithSoftmax(net, flip_tta=True)(x.flip(3)), tta)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_augment_keeps_uint8_nhwc_shape() -> None:
    images = torch.randint(0, 256, (6, 32, 32, 3), dtype=torch.uint8)
    out = augment(images, scale_min=0.35, jitter=0.3, generator=_gen())
    assert out.shape == images.shape and out.dtype == torch.uint8


def test_augment_crops_to_a_smaller_training_size_when_asked() -> None:
    images = torch.randint(0, 256, (6, 40, 40, 3), dtype=torch.uint8)
    out = augment(images, scale_min=0.35, jitter=0.3, generator=_gen(), out_size=32)
    assert out.shape == (6, 32, 32, 3) and out.dtype == torch.uint8


def test_augment_is_reproducible_for_a_seed_and_varies_per_sample() -> None:
    images = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8).repeat(8, 1, 1, 1)
    first = augment(images, 0.35, 0.3, _gen(1))
    assert torch.equal(first, augment(images, 0.35, 0.3, _gen(1)))
    assert len({bytes(sample.numpy()) for sample in first}) > 1, "every sample must get its own crop/flip/jitter"


def test_crop_zooms_into_the_image_without_inventing_pixels() -> None:
    ramp = torch.arange(32.0).repeat(32, 1)  # value = x coordinate
    images = ramp.expand(4, 3, 32, 32).clone()
    cropped = random_resized_crop(images, scale_min=0.25, generator=_gen())
    assert cropped.shape == images.shape
    assert cropped.min() >= 0 and cropped.max() <= 31
    spans = cropped[:, 0, 0, -1] - cropped[:, 0, 0, 0]
    assert (spans < 31).all(), "each crop covers less than the full width, then is resized back up"


def test_flip_mirrors_horizontally() -> None:
    image = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(64, 1, 1, 1)
    flipped = random_flip(image, _gen())
    mirrored = [bool(torch.equal(sample, image[0].flip(2))) for sample in flipped]
    assert 0 < sum(mirrored) < 64
    assert all(m or torch.equal(s, image[0]) for m, s in zip(mirrored, flipped, strict=True))


def test_zero_strength_jitter_changes_nothing() -> None:
    images = torch.rand(3, 3, 8, 8) * 255
    torch.testing.assert_close(colour_jitter(images, 0.0, _gen()), images)
