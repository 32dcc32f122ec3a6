"""Subprocesses as a user runs them from this venv, and the tools they need."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import REPO


def venv_env(**extra: str) -> dict[str, str]:
    """This environment with the venv's bin first on PATH (its dvc, torchrun) and no MLflow server set."""
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"} | extra
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run_checked(args: list[str], cwd: Path, *, timeout: float = 600, **extra_env: str) -> str:
    """stdout + stderr of a command that must succeed; a failure shows the end of both."""
    result = subprocess.run(args, cwd=cwd, env=venv_env(**extra_env), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def copy_working_tree(dest: Path) -> None:
    """The repository's tracked and untracked-but-not-ignored files, as a fresh clone plus local edits."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)


def require_tool(name: str) -> str:
    """The tool's path on PATH or beside this Python; fails naming how to install it."""
    path = shutil.which(name) or (
        str(Path(sys.executable).parent / name) if (Path(sys.executable).parent / name).exists() else None
    )
    if path is None:
        fix = (
            "run `bash scripts/ci-system-deps.sh` (installs Debian's prometheus package)"
            if name in ("promtool", "prometheus")
            else "run `pip install -r requirements/ops.txt`"
        )
        pytest.fail(f"`{name}` is not installed; {fix}", pytrace=False)
    return path
