"""Run compose's MLflow server command for real (from this environment's mlflow):
SQLite backend store, artifact destination, and the allowed-hosts list that lets
the train container reach it as http://mlflow:5000 while other Host headers are refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.network import free_port
from tests.helpers.paths import REPO, load_yaml

pytestmark = pytest.mark.slow


def get(url: str, host: str) -> int:
    req = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def test_compose_mlflow_command_serves_and_guards_hosts(tmp_path: Path) -> None:
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    command = load_yaml(REPO / "docker-compose.yml")["services"]["mlflow"]["command"]
    assert command[:2] == ["mlflow", "server"]
    port = free_port()
    args = [mlflow, *command[1:]]
    # Same command; only the volume path, bind address and port differ from the container's.
    args = [a.replace("sqlite:////mlflow/", f"sqlite:///{tmp_path}/") for a in args]
    args = [a.replace("/mlflow/artifacts", str(tmp_path / "artifacts")) for a in args]
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    log = tmp_path / "mlflow.log"
    proc = subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while get(f"{url}/health", "localhost:5000") != 200:
            assert proc.poll() is None, f"mlflow server exited {proc.returncode}:\n{log.read_text(errors='replace')}"
            assert time.monotonic() < deadline, f"mlflow not healthy in 120 s:\n{log.read_text(errors='replace')}"
            time.sleep(1)
        experiments = f"{url}/api/2.0/mlflow/experiments/search?max_results=5"
        assert get(experiments, "mlflow:5000") == 200, "the train container's Host header must be allowed"
        assert get(experiments, "evil.example:5000") in (400, 403), "unknown Host headers must be refused"
        assert (tmp_path / "mlflow.db").is_file(), "the SQLite backend store was not created"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
