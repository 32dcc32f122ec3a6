"""Read every file of a zip, a tar (any compression) or a directory as (path, bytes).

The kind is sniffed from the content, not the extension, so a download saved
without a suffix still opens. Paths are POSIX and relative to the archive root.
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from training.errors import ParamsError


@dataclass(frozen=True)
class Member:
    path: str
    data: bytes | None  # None: the archive entry itself could not be read (bad CRC, I/O error)


def source_kind(path: Path) -> str:
    if path.is_dir():
        return "directory"
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise ParamsError(
        f"{path} is neither a directory, a zip nor a tar archive; "
        "point data.source in params.yaml at a .zip, .tar, .tar.gz/.tgz or a folder of images"
    )


def count_members(path: Path) -> int | None:
    """File count for the progress bar; None where counting would mean reading everything twice."""
    kind = source_kind(path)
    if kind == "zip":
        with zipfile.ZipFile(path) as archive:
            return sum(not info.is_dir() for info in archive.infolist())
    if kind == "directory":
        return sum(p.is_file() for p in path.rglob("*"))
    return None


def iter_members(path: Path) -> Iterator[Member]:
    kind = source_kind(path)
    if kind == "zip":
        yield from _zip_members(path)
    elif kind == "tar":
        yield from _tar_members(path)
    else:
        yield from _dir_members(path)


def _zip_members(path: Path) -> Iterator[Member]:
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            try:
                data: bytes | None = archive.read(info)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
                data = None
            yield Member(info.filename, data)


def _tar_members(path: Path) -> Iterator[Member]:
    # Stream mode: a .tar.gz is decompressed once, front to back, never seeked.
    with tarfile.open(path, mode="r|*") as archive:
        for info in archive:
            if info.isfile():
                handle = archive.extractfile(info)
                yield Member(info.name.removeprefix("./"), handle.read() if handle else None)


def _dir_members(root: Path) -> Iterator[Member]:
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            data: bytes | None = file.read_bytes()
        except OSError:
            data = None
        yield Member(file.relative_to(root).as_posix(), data)


def iter_names(path: Path) -> Iterator[str]:
    """Member paths without reading their bytes (a tar is still streamed front to back)."""
    kind = source_kind(path)
    if kind == "zip":
        with zipfile.ZipFile(path) as archive:
            yield from (info.filename for info in archive.infolist() if not info.is_dir())
    elif kind == "tar":
        with tarfile.open(path, mode="r|*") as archive:
            yield from (info.name.removeprefix("./") for info in archive if info.isfile())
    else:
        yield from (p.relative_to(path).as_posix() for p in sorted(path.rglob("*")) if p.is_file())


def extract_member(path: Path, name: str, dest: Path) -> None:
    """Stream one member of a zip or tar to `dest` without holding it in memory."""
    if source_kind(path) == "zip":
        with zipfile.ZipFile(path) as archive, archive.open(name) as src, dest.open("wb") as out:
            shutil.copyfileobj(src, out)
        return
    with tarfile.open(path, mode="r|*") as archive:
        for info in archive:
            if info.isfile() and info.name.removeprefix("./") == name:
                src = archive.extractfile(info)
                assert src is not None  # isfile() members always have a body
                with dest.open("wb") as out:
                    shutil.copyfileobj(src, out)
                return
    raise KeyError(f"{name} is not in {path}")
