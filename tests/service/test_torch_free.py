"""The service runs from the serve-only environment, where torch (and onnx) are absent.

SERVE_PYTHON names that interpreter (default: <repo>/.venv-serve/bin/python, which
`make test` creates from requirements/serve.txt).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from tests.helpers.images import RED, image_bytes
from tests.helpers.paths import REPO
from tests.helpers.service_process import start_service, stop_service

SERVE_PYTHON = Path(os.environ.get("SERVE_PYTHON", REPO / ".venv-serve" / "bin" / "python"))


def serve_python() -> str:
    assert SERVE_PYTHON.exists(), (
        f"serve-only interpreter {SERVE_PYTHON} is missing; run `make test` (it builds .venv-serve from "
        "requirements/serve.txt) or point SERVE_PYTHON at a venv with only requirements/serve.txt installed"
    )
    return str(SERVE_PYTHON)


def test_serve_requirements_exclude_torch_torchvision_and_onnx() -> None:
    names = {
        line.split("==")[0].strip().lower()
        for line in (REPO / "requirements" / "serve.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert names.isdisjoint({"torch", "torchvision", "onnx"})
    assert {"onnxruntime", "starlette", "uvicorn", "pillow", "numpy"} <= names


def test_torch_and_onnx_are_not_importable_in_the_serve_environment() -> None:
    for module in ("torch", "torchvision", "onnx"):
        result = subprocess.run([serve_python(), "-c", f"import {module}"], capture_output=True, text=True)
        assert result.returncode != 0, f"{module} is importable in {SERVE_PYTHON}"
        assert "ModuleNotFoundError" in result.stderr


def test_service_starts_and_predicts_without_torch(model_path: Path, tmp_path: Path) -> None:
    server = start_service(model_path, tmp_path, python=serve_python())
    try:
        response = httpx.post(f"{server.url}/predict", files={"file": ("a.jpg", image_bytes(RED))})
        assert response.status_code == 200
        assert response.json()["predicted_class"] == "cat"
        assert httpx.get(f"{server.url}/docs/static/swagger-ui.css").status_code == 200
        loaded = subprocess.run(
            [
                serve_python(),
                "-c",
                "import sys, service.app; service.app.create_app; "
                "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'training', 'export')))",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        assert loaded.stdout.strip() == "[]"
    finally:
        stop_service(server)
