"""Decide, file by file, whether an archive member becomes a training image.

An image is kept only if service.preprocessing.decode_image fully decodes it:
the same function serving runs, so nothing enters training that the service
would reject. Pure functions of (path, bytes), safe to run in worker processes.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from PIL import Image

from service.preprocessing import ImageError, decode_image
from training.layouts import IMAGE_SUFFIXES, is_system_file, label_from_path

# Every reason a file can be dropped, in report order. Reported with zeros too,
# so `dvc metrics diff` shows a stable set of keys.
DROP_REASONS = (
    "system_file",  # .DS_Store, Thumbs.db, __MACOSX/...: skipped without decoding
    "unlabelled",  # an image file whose path names no class (Kaggle test1/, ambiguous paths)
    "unreadable_member",  # the archive entry itself is corrupt
    "empty_file",
    "not_an_image",  # non-image files, and text renamed to .jpg
    "truncated",
    "undecodable",
    "image_too_large",
    "tiny",  # shorter side below data.min_side
    "duplicate",  # byte-identical to a kept image
    "conflicting_label",  # the same bytes appear under more than one class: all copies dropped
)

# Pillow format -> file extension used inside data/clean/images.zip.
_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "BMP": "bmp", "WEBP": "webp", "TIFF": "tif"}


@dataclass(frozen=True)
class Candidate:
    """A decodable, labelled image, before duplicate removal."""

    source_path: str
    label: str
    sha256: str
    width: int  # upright size, after EXIF orientation
    height: int
    ext: str

    @property
    def path(self) -> str:
        """Name inside data/clean/images.zip: content-addressed, so archive file names never matter."""
        return f"{self.label}/{self.sha256}.{self.ext}"


@dataclass(frozen=True)
class Rejected:
    source_path: str
    reason: str


def screen(source_path: str, data: bytes | None, classes: Sequence[str], min_side: int) -> Candidate | Rejected:
    if is_system_file(source_path):
        return Rejected(source_path, "system_file")
    label = label_from_path(source_path, classes)
    if label is None:
        is_image_name = PurePosixPath(source_path).suffix.lower() in IMAGE_SUFFIXES
        return Rejected(source_path, "unlabelled" if is_image_name else "not_an_image")
    if data is None:
        return Rejected(source_path, "unreadable_member")
    try:
        image = decode_image(data)  # full decode, no draft: truncation shows up only at the end
    except ImageError as exc:
        return Rejected(source_path, exc.code)
    if min(image.size) < min_side:
        return Rejected(source_path, "tiny")
    image_format = Image.open(io.BytesIO(data)).format or "bin"  # header only; decode_image's copy lost it
    return Candidate(
        source_path=source_path,
        label=label,
        sha256=hashlib.sha256(data).hexdigest(),
        width=image.width,
        height=image.height,
        ext=_EXTENSIONS.get(image_format, image_format.lower()),
    )


def deduplicate(candidates: Sequence[Candidate]) -> tuple[list[Candidate], list[Rejected]]:
    """Keep one copy per sha256; drop every copy of bytes that carry two labels.

    The kept copy is the one with the smallest source path, so the result does
    not depend on archive order. Returns (kept sorted by path, rejected).
    """
    by_sha: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        by_sha.setdefault(candidate.sha256, []).append(candidate)
    kept: list[Candidate] = []
    rejected: list[Rejected] = []
    for copies in by_sha.values():
        copies.sort(key=lambda c: c.source_path)
        if len({c.label for c in copies}) > 1:
            rejected += [Rejected(c.source_path, "conflicting_label") for c in copies]
        else:
            kept.append(copies[0])
            rejected += [Rejected(c.source_path, "duplicate") for c in copies[1:]]
    kept.sort(key=lambda c: c.path)
    return kept, rejected
