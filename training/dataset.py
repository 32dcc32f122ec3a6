"""Read the cleaned dataset's original image bytes for one split.

Export's parity gate and evaluation start from these bytes, not from the
uint8 cache, so they exercise the full serving path: decode, resize, normalise.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from training.split import read_split


@dataclass(frozen=True)
class LabelledImage:
    path: str
    label: str
    data: bytes


def split_images(split: str, limit: int | None = None, *, images_zip: Path, split_csv: Path) -> list[LabelledImage]:
    rows = [row for row in read_split(split_csv) if row.split == split][:limit]
    with zipfile.ZipFile(images_zip) as archive:
        return [LabelledImage(row.path, row.label, archive.read(row.path)) for row in rows]
