"""The hand-written OpenAPI spec holds: schemathesis, every check, against a real `python -m service`.

Settings (seed, examples, auth, the per-operation statuses JSON Schema cannot express) are in
tests/service/schemathesis.toml; tests/service/fuzz_hooks.py makes positive uploads real images.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from tests.helpers.paths import REPO
from tests.helpers.service_process import start_service, stop_service

pytestmark = pytest.mark.slow

CONFIG = REPO / "tests" / "service" / "schemathesis.toml"
ADMIN_TOKEN = "fuzz-admin-token"


def failures_section(output: str) -> str:
    """The FAILURES block, each line cut short: reproductions of multipart bodies run to megabytes."""
    start = output.find("= FAILURES =")
    return "\n".join(line[:300] for line in output[start if start >= 0 else 0 :].splitlines()[:200])


def test_the_real_service_answers_as_its_openapi_spec_says_under_schemathesis(tmp_path: Path) -> None:
    svc = start_service(REPO / "models" / "model.onnx", tmp_path, ADMIN_TOKEN=ADMIN_TOKEN)
    try:
        spec = httpx.get(f"{svc.url}/openapi.json").json()
        version = httpx.get(f"{svc.url}/model").json()["model_version"]
        env = {
            **os.environ,
            "CATSDOGS_FUZZ_ADMIN_TOKEN": ADMIN_TOKEN,
            "CATSDOGS_FUZZ_MODEL_VERSION": version,
            "PYTHONPATH": str(REPO),  # the hooks module is tests.service.fuzz_hooks
        }
        command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color"]
        command += ["run", f"{svc.url}/openapi.json", "--checks", "all"]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    finally:
        stop_service(svc)
    output = result.stdout + result.stderr
    assert result.returncode == 0, failures_section(output)
    operations = sum(len(methods) for methods in spec["paths"].values())
    assert f"Tested: {operations}" in output, output[-3000:]
    assert f"Seed: {tomllib.loads(CONFIG.read_text())['seed']}" in output
    assert "❌" not in output, failures_section(output)
    for phase in ("Coverage", "Fuzzing", "Stateful"):  # Examples runs only where the spec has examples
        assert re.search(rf"✅ {phase}\b", output), output[-3000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", output)
    assert generated and int(generated[1]) == int(generated[2]) > 20 * operations, output[-3000:]
