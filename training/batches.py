"""uint8 batches where the model runs, and the model input made from them there.

The prepared caches are uint8 NHWC, a quarter of the bytes of the float32 input,
so batches travel as uint8 and are augmented and normalised on the device. On a
GPU the whole training cache stays in device memory when it fits; otherwise each
batch is gathered into pinned host memory and copied without blocking, so the
host gathers batch k+1 while the device still runs step k. Nothing in here waits
on the device. On the CPU the cache stays as it is and a batch costs what an
index costs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import torch

from service.preprocessing import PreprocessSpec

# The cache may take at most this share of the device's free memory; the rest is
# for the model, its activations at the largest batch, and the allocator's slack.
DEVICE_CACHE_SHARE = 0.5

log = logging.getLogger(__name__)


def normalize(images: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in channels_last memory, on the images' device.

    The torch twin of service.preprocessing.normalize: the same float32 scale and
    shift, so the model trains on what the service feeds it (tests hold the two to 1e-6).
    """
    mean = torch.tensor(spec.mean, dtype=torch.float32)
    std = torch.tensor(spec.std, dtype=torch.float32)
    # Per-channel constants; non_blocking: a plain copy to a GPU would wait for its queue.
    scale = (std * 255.0).to(images.device, non_blocking=True)
    shift = (mean / std).to(images.device, non_blocking=True)
    # Scaled as NHWC, channels last in memory (the fewest passes; uint8 is cheap to lay out), then
    # viewed as NCHW: that view is the channels_last layout the convolutions prefer.
    x = images.contiguous().float()
    return x.div_(scale).sub_(shift).permute(0, 3, 1, 2)


def cache_fits(nbytes: int, device: torch.device) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= free * DEVICE_CACHE_SHARE


def place(images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a split's uint8 images and labels live while batches are cut from them.

    On the CPU: as they are. On a GPU: in its memory when they fit with room to spare,
    else in pinned host memory, the kind a copy to the device need not wait for.
    """
    if device.type != "cuda":
        return images, labels
    nbytes = images.nbytes + labels.nbytes
    if cache_fits(nbytes, device):
        log.info("cache of %d images (%.2f GB) placed on %s", len(images), nbytes / 1e9, device)
        return images.to(device), labels.to(device)
    log.info(
        "cache of %d images (%.2f GB) kept in pinned host memory: it does not fit on %s",
        len(images),
        nbytes / 1e9,
        device,
    )
    return images.pin_memory(), labels.pin_memory()


def device_batches(
    images: torch.Tensor, labels: torch.Tensor, batches: Sequence[torch.Tensor], device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images, labels) of each batch of row indices, on `device`, lazily."""
    if not batches:
        return
    if images.device == device:
        # One copy of the epoch's indices, not one per batch.
        rows = torch.cat(list(batches)).to(device, non_blocking=True)
        for chunk in rows.split([len(batch) for batch in batches]):
            yield images[chunk], labels[chunk]
        return
    for batch in batches:
        yield _copied_rows(images, batch, device), _copied_rows(labels, batch, device)


def _copied_rows(source: torch.Tensor, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """source[rows] gathered into fresh pinned memory (the caching host allocator reuses it only once the
    copy has finished), then copied to the device without blocking."""
    staged = torch.empty((len(rows), *source.shape[1:]), dtype=source.dtype, pin_memory=True)
    torch.index_select(source, 0, rows, out=staged)
    return staged.to(device, non_blocking=True)
