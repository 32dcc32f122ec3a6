"""Build the exact environment Dockerfile.serve describes (no Docker engine here),
measure it against the 300 MB image target, and run the service from it the way
the image does: /app with service/ + the model only, nothing written anywhere."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import REPO
from tests.helpers.service_process import start_service, stop_service

pytestmark = pytest.mark.slow

IMAGE_BUDGET_MB = 300


def files_under(*roots: Path) -> set[str]:
    return {str(p) for root in roots for p in root.rglob("*")}


def test_serve_env_builds_from_the_lock_fits_the_budget_and_serves(toy_model: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "measure_envs.py"), "serve", "--keep", str(venv)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)

    # Exactly serve.txt: same distributions, no torch/onnx, no pip/setuptools in the runtime venv.
    wanted = {
        re.split(r"==", line)[0].lower().replace("_", "-")
        for line in (REPO / "requirements" / "serve.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    got = {name.lower().replace("_", "-") for name in report["packages"]}
    assert got == wanted, f"extra: {got - wanted}, missing: {wanted - got}"
    assert not {"torch", "torchvision", "onnx", "pip", "setuptools"} & got

    model_mb = report["model_mb"] if report["model_bundled"] else 0.5  # the trained model is well under 1 MB
    estimate = report["base_image_mb_assumed"] + report["venv_mb"] + report["app_mb"] + model_mb
    assert estimate <= IMAGE_BUDGET_MB, f"serve image estimate {estimate:.0f} MB > {IMAGE_BUDGET_MB} MB: {report}"

    # Lay out /app as the image does and run the service from the built venv.
    app = tmp_path / "app"
    shutil.copytree(REPO / "service", app / "service", ignore=shutil.ignore_patterns("__pycache__"))
    (app / "models").mkdir()
    shutil.copy(toy_model, app / "models" / "model.onnx")
    before = files_under(app, venv)
    svc = start_service(
        app / "models" / "model.onnx",
        tmp_path,
        python=str(venv / "bin" / "python"),
        cwd=app,
        PYTHONNOUSERSITE="1",
    )
    try:
        smoke = subprocess.run(
            [sys.executable, "-I", str(REPO / "deploy" / "smoke_test.py"), "--url", svc.url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr + svc.log_tail()
        health = subprocess.run(
            [str(venv / "bin" / "python"), str(REPO / "deploy" / "healthcheck.py"), "--url", f"{svc.url}/ready"],
            timeout=30,
        )
        assert health.returncode == 0
    finally:
        stop_service(svc)
    written = files_under(app, venv) - before
    assert not written, f"the service wrote files (breaks a read-only root filesystem): {sorted(written)[:10]}"
