"""Building the project's own images (Dockerfile.serve, Dockerfile.train) from the repo root."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

from tests.containers.engine import Engine
from tests.helpers.paths import REPO


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    base: str
    build_s: float


def git_sha() -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def build_project_image(engine: Engine, dockerfile: str, tag: str, base: str, *args: str) -> BuiltImage:
    """`docker build` of the repo as a user runs it, on `base` as PYTHON_IMAGE."""
    start = time.monotonic()
    engine.run(
        "build", "--network=host", "--force-rm", f"--file={dockerfile}", f"--tag={tag}",
        f"--build-arg=PYTHON_IMAGE={base}", *args, str(REPO),
        timeout=3600,
    )  # fmt: skip
    return BuiltImage(tag, base, time.monotonic() - start)
