"""Atomic file writes: a stage's output either appears complete or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path next to `dest`; it becomes `dest` only if the block succeeds.

    Same directory so os.replace is a rename on one filesystem; an interrupted run
    (Ctrl-C, crash, failed download) leaves no half-written file for DVC to cache.
    The temporary file has `dest`'s own name, in a hidden folder: torch.save records the
    file's name in its archive, and a random name would make every checkpoint's bytes differ.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    tmp = folder / dest.name
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # outputs should read like normal files, whatever the umask
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_text_atomic(dest: Path, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
