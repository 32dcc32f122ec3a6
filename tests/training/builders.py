"""Small synthetic images and archives for the data-stage tests (built in tmp_path, never real data)."""

from __future__ import annotations

import io
import random
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from training.params import DataParams

Members = Sequence[tuple[str, bytes]]


def data_params(source: Path | str, *, min_side: int = 32, sha256: str | None = None) -> DataParams:
    return DataParams(source=str(source), sha256=sha256, min_side=min_side, classes=("cat", "dog"))


def pixels(seed: int, size: tuple[int, int] = (40, 48)) -> np.ndarray:
    """Random uint8 HxWx3; different seeds give different bytes, so no accidental duplicates."""
    width, height = size
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg(seed: int, size: tuple[int, int] = (40, 48)) -> bytes:
    return encode(Image.fromarray(pixels(seed, size)), "JPEG", quality=90)


def png(seed: int, size: tuple[int, int] = (40, 48)) -> bytes:
    return encode(Image.fromarray(pixels(seed, size)), "PNG")


def kaggle_members(n_per_class: int, *, prefix: str = "train/", seed: int = 0) -> list[tuple[str, bytes]]:
    return [
        (f"{prefix}{cls}.{i}.jpg", jpeg(seed + 1000 * c + i))
        for c, cls in enumerate(("cat", "dog"))
        for i in range(n_per_class)
    ]


def write_zip(path: Path, members: Members) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def write_tar(path: Path, members: Members) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def write_dir(root: Path, members: Members) -> Path:
    for name, data in members:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def shuffled(members: Members, seed: int) -> list[tuple[str, bytes]]:
    out = list(members)
    random.Random(seed).shuffle(out)
    return out
