"""Fixtures for the ops checks: a toy ONNX model (built with onnx.helper, so no
training is needed) and the real service, started with `python -m service`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.onnx_models import build_toy_model
from tests.helpers.service_process import ServiceProcess, start_service, stop_service


@pytest.fixture(scope="session")
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_model(tmp_path_factory.mktemp("model") / "model.onnx")


@pytest.fixture(scope="session")
def service(toy_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = start_service(toy_model, tmp_path_factory.mktemp("service"))
    try:
        yield svc
    finally:
        stop_service(svc)
