"""Turn params `data.source` into a local file or folder, downloading URLs once.

A URL is fetched into the repo's data/raw/ (progress bar, temp file + os.replace, so an
interrupted download leaves nothing behind) and its sha256 is recorded next to
it as `<name>.sha256`. A later run reuses the file when its bytes still match
that record (or `data.sha256` when set) instead of downloading again.

A local path may use `~` and environment variables (`$HOME/Downloads/train.zip`). A relative
path is read from the repo root: `$DVC_ROOT` when DVC runs the stage (for `dvc exp run --temp`
and `--queue` that is the user's repo, not the throwaway copy the experiment runs in), else the
working directory. reports/data.json records the path as configured, so it reads the same
wherever the experiment ran.

The full public dataset is Microsoft's PetImages release (~800 MB, original
sizes, a few zero-byte and undecodable files that ingest drops), PETIMAGES_URL below.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from training.atomic import atomic_path, write_text_atomic
from training.errors import UserError

_CHUNK = 1 << 20
PETIMAGES_URL = (
    "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"
)
# The end of every "this source has no labels" message: what data.source can be instead.
LABELLED_SOURCES = (
    "data.source needs images whose paths name a class (train/cat.0.jpg, PetImages/Cat/0.jpg, cats/x.jpg): "
    "pass Kaggle's train.zip (inside dogs-vs-cats.zip; not test1.zip, which is unlabelled), "
    f"Microsoft's PetImages zip ({PETIMAGES_URL}) or a folder with cats/ and dogs/ subfolders"
)


class SourceError(UserError, RuntimeError):
    """The configured source cannot be used; the message says what to change."""


@dataclass(frozen=True)
class ResolvedSource:
    path: Path  # as configured (expanded) or downloaded: what reports/data.json records
    url: str | None
    sha256: str | None  # of the archive file; None for a directory
    location: Path  # where the bytes are read: `path`, or a relative `path` under the repo root

    def describe(self) -> dict[str, str | None]:
        return {"url": self.url, "path": str(self.path), "sha256": self.sha256}


def is_url(source: str) -> bool:
    return urllib.parse.urlsplit(source).scheme in ("http", "https")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def repo_root() -> Path:
    """Where a relative data.source starts: DVC sets DVC_ROOT to the user's repo, even in a temp experiment."""
    return Path(os.environ.get("DVC_ROOT", "."))


def expand_path(source: str) -> Path:
    """`~` and `$VAR`/`${VAR}` expanded; an unset variable is an error rather than a literal `$VAR` folder."""
    unset = sorted({name for name in re.findall(r"\$\{?(\w+)", source) if name not in os.environ})
    if unset:
        raise SourceError(
            f"data.source {source!r} uses unset environment variable(s) {', '.join(unset)}; "
            "export them or write the path out in data.source"
        )
    return Path(os.path.expandvars(source)).expanduser()


def resolve_source(
    source: str, raw_dir: Path, expected_sha256: str | None = None, root: Path | None = None
) -> ResolvedSource:
    root = root or repo_root()
    if is_url(source):
        # Into the repo's data/raw/, not a temp experiment's: each `--temp` run reuses one download.
        location, sha = download(source, root / raw_dir, expected_sha256)
        return ResolvedSource(path=raw_dir / location.name, url=source, sha256=sha, location=location)
    path = expand_path(source)
    location = root / path  # an absolute `path` replaces the root
    if not location.exists():
        raise SourceError(
            f"data.source {source!r} does not exist (looked at {location.resolve()}); fix data.source in "
            "params.yaml: a zip, tar(.gz) or folder of images relative to the repo root, or an http(s) URL"
        )
    if location.is_dir():
        if expected_sha256:
            raise SourceError(f"data.sha256 is set but {source!r} is a folder; set data.sha256: null")
        return ResolvedSource(path=path, url=None, sha256=None, location=location)
    sha = file_sha256(location)
    _check_sha(location, sha, expected_sha256)
    return ResolvedSource(path=path, url=None, sha256=sha, location=location)


def _check_sha(path: Path, actual: str, expected: str | None) -> None:
    if expected and actual != expected.lower():
        raise SourceError(
            f"{path} has sha256 {actual} but params.yaml data.sha256 is {expected}. If the source changed "
            f"on purpose set data.sha256: {actual} (or null to only record it); otherwise check data.source"
        )


def download_name(url: str) -> str:
    name = PurePosixPath(urllib.parse.urlsplit(url).path).name
    return name or "download"


def download(url: str, raw_dir: Path, expected_sha256: str | None = None, timeout: float = 60) -> tuple[Path, str]:
    """Fetch `url` into raw_dir once; returns (path, sha256). Raises SourceError on any failure."""
    dest = raw_dir / download_name(url)
    record = dest.with_name(dest.name + ".sha256")
    if dest.exists():
        actual = file_sha256(dest)
        recorded = record.read_text().split()[0] if record.exists() else None
        if actual == (expected_sha256.lower() if expected_sha256 else recorded):
            return dest, actual

    try:
        with atomic_path(dest) as tmp:
            actual = _fetch(url, tmp, timeout, label=dest.name)
            # Checked before the rename, so a wrong file never takes the real name.
            _check_sha(dest, actual, expected_sha256)
    # URLError, HTTPError, timeouts and resets are OSErrors; a cut-off body can be IncompleteRead.
    except (OSError, http.client.HTTPException) as exc:
        raise SourceError(f"download of {url} failed ({exc}); check the URL and network, then re-run") from exc
    write_text_atomic(record, f"{actual}  {dest.name}\n")
    return dest, actual


def _fetch(url: str, dest: Path, timeout: float, label: str) -> str:
    digest = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(url, timeout=timeout) as response, dest.open("wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"download {label}") as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        # urllib returns a short body without raising when the server hangs up early.
        raise OSError(f"connection closed after {received} of {total} bytes")
    return digest.hexdigest()
