"""Batches where the model runs: the torch normalisation is the service's, and batches are the rows asked for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.preprocessing import PreprocessSpec
from service.preprocessing import normalize as service_normalize
from training import batches
from training.params import load_params

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; the CPU tests cover the rest")
SPEC = load_params().preprocess


def _uint8(n: int = 6, size: int = 20) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "spec", [SPEC, PreprocessSpec(image_size=20, mean=(0.5, 0.25, 0.125), std=(0.2, 0.3, 0.7))], ids=["params", "odd"]
)
def test_normalize_matches_the_service_normalize_within_1e_6(spec: PreprocessSpec) -> None:
    images = _uint8()
    images[0, 0, 0] = (0, 255, 128)  # both ends of the range
    ours = batches.normalize(torch.from_numpy(images), spec)
    np.testing.assert_allclose(ours.numpy(), service_normalize(images, spec), rtol=0, atol=1e-6)


def test_normalize_gives_the_channels_last_float_layout_the_model_takes() -> None:
    out = batches.normalize(torch.from_numpy(_uint8()), SPEC)
    assert out.shape == (6, 3, 20, 20) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_device_batches_yield_the_rows_of_each_batch_in_order() -> None:
    images, labels = torch.from_numpy(_uint8(10)), torch.arange(10) % 2
    order = [torch.tensor([3, 1, 4]), torch.tensor([0, 9]), torch.tensor([5, 2, 6, 8, 7])]
    got = list(batches.device_batches(images, labels, order, torch.device("cpu")))
    assert len(got) == 3
    for (x, y), rows in zip(got, order, strict=True):
        assert torch.equal(x, images[rows]) and torch.equal(y, labels[rows])


def test_on_the_cpu_the_cache_stays_where_it_is() -> None:
    images, labels = torch.from_numpy(_uint8()), torch.zeros(6, dtype=torch.long)
    placed_images, placed_labels = batches.place(images, labels, torch.device("cpu"))
    assert placed_images.data_ptr() == images.data_ptr() and placed_labels.data_ptr() == labels.data_ptr()


def test_the_cache_goes_to_the_device_only_with_room_to_spare(monkeypatch: pytest.MonkeyPatch) -> None:
    gib = 1 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * gib, 16 * gib))
    assert batches.cache_fits(4 * gib, torch.device("cuda", 0))
    assert not batches.cache_fits(6 * gib, torch.device("cuda", 0)), "half the free memory stays for training"


@CUDA
def test_cuda_batches_match_the_cpu_ones_from_the_device_cache_and_from_pinned_memory() -> None:
    images, labels = torch.from_numpy(_uint8(10)), torch.arange(10) % 2
    order = [torch.tensor([3, 1, 4]), torch.tensor([0, 9, 5])]
    device = torch.device("cuda", torch.cuda.current_device())
    on_device = batches.place(images, labels, device)
    pinned = images.pin_memory(), labels.pin_memory()
    for cache in (on_device, pinned):
        for (x, y), rows in zip(batches.device_batches(*cache, order, device), order, strict=True):
            assert x.device == device and torch.equal(x.cpu(), images[rows]) and torch.equal(y.cpu(), labels[rows])
    ours = batches.normalize(images.to(device), SPEC).cpu().numpy()
    np.testing.assert_allclose(ours, service_normalize(images.numpy(), SPEC), rtol=0, atol=1e-6)
