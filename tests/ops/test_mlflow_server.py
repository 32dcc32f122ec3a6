"""Run compose's MLflow server command for real (from this environment's mlflow):
SQLite backend store, artifact destination, and the allowed-hosts list that lets
the train container reach it as http://mlflow:5000 while other Host headers are refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.network import free_port, http_status, wait_for_200
from tests.helpers.paths import REPO, load_yaml

pytestmark = pytest.mark.slow


def get(url: str, host: str) -> int:
    return http_status(url, timeout=5, headers={"Host": host})


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
        wait_for_200(f"{url}/health", proc, log, within_s=120, poll_s=1, headers={"Host": "localhost:5000"})
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
