"""Fixtures: a tiny ONNX model (tests/helpers/onnx_models.py), and the service both in-process
(ASGI TestClient) and as a real uvicorn subprocess."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

with warnings.catch_warnings():  # starlette suggests httpx2; httpx is what the venv has
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from service.app import create_app
from tests.helpers.onnx_models import build_model
from tests.helpers.service_app import make_settings
from tests.helpers.service_process import ServiceProcess, start_service, stop_service


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return build_model(tmp_path / "models" / "model.onnx")


@pytest.fixture
def client(model_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(model_path)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def server(model_path: Path, tmp_path: Path) -> Iterator[ServiceProcess]:
    srv = start_service(model_path, tmp_path, ADMIN_TOKEN="s3cret")
    yield srv
    stop_service(srv)


@pytest.fixture(params=["1", "2"], ids=["1-worker", "2-workers"])
def workers(request: pytest.FixtureRequest) -> str:
    """WORKERS for a test whose behaviour must not depend on it: hostile uploads, slow clients."""
    return str(request.param)


@pytest.fixture
def any_server(model_path: Path, tmp_path: Path, workers: str) -> Iterator[ServiceProcess]:
    srv = start_service(model_path, tmp_path, WORKERS=workers)
    yield srv
    stop_service(srv)
