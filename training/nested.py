"""Archives that only wrap other archives, such as Kaggle's competition download.

`kaggle competitions download -c dogs-vs-cats` gives dogs-vs-cats.zip, which holds train.zip
(labelled: train/cat.0.jpg) and test1.zip (unlabelled: test1/1.jpg). Such a source is unwrapped
one level: the one inner archive with labelled images is used, and every other member is
reported as skipped with the reason. A source with images of its own is never unwrapped.
"""

from __future__ import annotations

import shlex
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from training.archives import extract_member, iter_names, source_kind
from training.atomic import atomic_path
from training.layouts import IMAGE_SUFFIXES, is_system_file, label_from_path
from training.sources import LABELLED_SOURCES, SourceError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")


@dataclass(frozen=True)
class Unwrapped:
    inner: str  # member path of the archive used, inside the source
    location: Path  # that archive on disk
    skipped: dict[str, str]  # every other member -> why it was not used

    def describe(self) -> dict[str, object]:
        return {"inner": self.inner, "skipped": self.skipped}

    def summary(self) -> str:
        skipped = "; ".join(f"{name}: {why}" for name, why in self.skipped.items())
        return f"using {self.inner}, the labelled archive inside data.source; skipped {skipped or 'nothing'}"


def _is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def wraps_archives(source: Path) -> bool:
    """True when `source` holds archives and no images; stops at the first image, so plain sources cost little."""
    holds_archive = False
    for name in iter_names(source):
        if _is_image(name):
            return False
        holds_archive = holds_archive or _is_archive(name)
    return holds_archive


def count_labelled(archive: Path, classes: Sequence[str]) -> tuple[int, int]:
    """(images, images whose path names a class) inside `archive`, by name alone."""
    images = [name for name in iter_names(archive) if _is_image(name) and not is_system_file(name)]
    return len(images), sum(label_from_path(name, classes) is not None for name in images)


def what_to_pass(source: Path, inner: str) -> str:
    """The commands that train on `inner` alone: extract it into data/raw/ (git-ignored), then point at it."""
    if source.is_dir():
        return f"`dvc exp run --temp -S data.source={shlex.quote(str(source / inner))}`"
    archive, member = shlex.quote(str(source)), shlex.quote(inner)
    if source_kind(source) == "zip":  # -j: lands as data/raw/<name>, whatever folder it sat in
        extract, extracted = f"unzip -j {archive} {member} -d data/raw", PurePosixPath(inner).name
    else:
        extract, extracted = f"tar -xf {archive} -C data/raw {member}", inner
    return f"`{extract}` then `dvc exp run --temp -S data.source={shlex.quote(f'data/raw/{extracted}')}`"


def _member_on_disk(source: Path, inner: str, work_dir: Path) -> Path:
    if source.is_dir():
        return source / inner
    work_dir.mkdir(parents=True, exist_ok=True)
    dest = work_dir / PurePosixPath(inner).name
    with atomic_path(dest) as tmp:
        extract_member(source, inner, tmp)
    return dest


def unwrap(source: Path, classes: Sequence[str], work_dir: Path) -> Unwrapped | None:
    """The labelled archive inside a wrapper `source`, extracted under work_dir; None for any other source."""
    if not wraps_archives(source):
        return None
    names = [name for name in iter_names(source) if not is_system_file(name)]
    skipped = {name: "not an archive" for name in names if not _is_archive(name)}
    labelled: list[tuple[str, Path]] = []
    for inner in (name for name in names if _is_archive(name)):
        location = _member_on_disk(source, inner, work_dir)
        try:
            images, named = count_labelled(location, classes)
        except (ValueError, OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
            skipped[inner] = f"not a readable archive ({exc})"
        else:
            if named:
                labelled.append((inner, location))
                continue
            skipped[inner] = (
                f"{images} images, none with a class in its path (an unlabelled set like Kaggle's test1.zip)"
            )
        if not source.is_dir():
            location.unlink()
    if not labelled:
        found = "; ".join(f"{name}: {why}" for name, why in skipped.items())
        raise SourceError(f"{source} holds archives but none with labelled images ({found}). {LABELLED_SOURCES}")
    if len(labelled) > 1:
        raise SourceError(
            f"{source} holds {len(labelled)} archives with labelled images ({', '.join(n for n, _ in labelled)}); "
            f"pass the one to train on, e.g. {what_to_pass(source, labelled[0][0])}"
        )
    inner, location = labelled[0]
    return Unwrapped(inner=inner, location=location, skipped=skipped)
