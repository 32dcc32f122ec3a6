"""`make serve` names it in one line when the model it is about to serve is not the committed one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
WARNING = "make serve: WARNING: models/model.onnx is not the committed model"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The Makefile in a git checkout with a committed model and a serving venv that only says it ran."""
    for name in ("Makefile", "requirements/serve.lock", "scripts/build_serve_venv.sh"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tmp_path / name)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/model.onnx").write_bytes(b"the committed model")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*GIT, "commit", "-qm", "model"], cwd=tmp_path, check=True)
    python = tmp_path / ".venv-serve/bin/python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\necho serving\n")
    python.chmod(0o755)
    (tmp_path / ".venv-serve/.built").touch()  # newer than its prerequisites: make builds nothing
    return tmp_path


def _serve(checkout: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # Under `make test` the outer make's variables would make this one print "Entering directory".
    outer = {"MODEL_PATH", "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES"}
    environ = {k: v for k, v in os.environ.items() if k not in outer} | env
    return subprocess.run(["make", "serve"], cwd=checkout, env=environ, capture_output=True, text=True, timeout=60)


def test_make_serve_warns_once_when_the_model_is_not_the_committed_one(checkout: Path) -> None:
    (checkout / "models/model.onnx").write_bytes(b"a model dvc exp run left here")
    result = _serve(checkout)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("serving")
    warnings = [line for line in result.stderr.splitlines() if line.startswith(WARNING)]
    assert len(warnings) == 1 and "git checkout -- models/model.onnx" in warnings[0], result.stderr


def test_make_serve_is_quiet_on_the_committed_model(checkout: Path) -> None:
    result = _serve(checkout)
    assert result.returncode == 0 and WARNING not in result.stderr, result.stderr


def test_make_serve_is_quiet_when_model_path_points_elsewhere(checkout: Path) -> None:
    (checkout / "models/model.onnx").write_bytes(b"changed, but not what is served")
    result = _serve(checkout, MODEL_PATH="/srv/other.onnx")
    assert result.returncode == 0 and WARNING not in result.stderr, result.stderr
