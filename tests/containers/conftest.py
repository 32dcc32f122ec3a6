"""Session fixtures for the container checks: a private Docker engine, the stand-in bases,
and the serve image built from Dockerfile.serve exactly as a user builds it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.containers import standins
from tests.containers.engine import Engine, start_engine, stop_engine
from tests.containers.images import BuiltImage, build_project_image, git_sha

SERVE_IMAGE = "catsdogs-serve:local"  # docker-compose.yml's default SERVE_IMAGE


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    started = start_engine(tmp_path_factory.mktemp("dockerd"))
    try:
        yield started
    finally:
        stop_engine(started)


@pytest.fixture(scope="session")
def python_base(engine: Engine) -> str:
    return standins.ensure_python(engine)


@pytest.fixture(scope="session")
def serve_image(engine: Engine, python_base: str) -> BuiltImage:
    return build_project_image(engine, "Dockerfile.serve", SERVE_IMAGE, python_base, f"--build-arg=GIT_SHA={git_sha()}")
