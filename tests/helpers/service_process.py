"""A real `python -m service` process on 127.0.0.1, for the tests that talk to it over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.network import free_port, http_status
from tests.helpers.paths import REPO


@dataclass
class ServiceProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def log_lines(self) -> list[dict[str, object]]:
        return [json.loads(raw) for raw in self.log_path.read_text().splitlines()]  # every stdout line is JSON

    def wait_for_log(self, predicate: Callable[[dict[str, object]], bool], timeout: float = 10.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_lines():
                if predicate(line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no matching log line within {timeout} s:\n{self.log_tail()}")


def start_service(
    model: Path,
    log_dir: Path,
    *,
    python: str = sys.executable,
    cwd: Path = REPO,
    timeout: float = 60.0,
    **env: str,
) -> ServiceProcess:
    """Start the service on a free port and return once /ready is 200.

    The environment is only PATH plus what is passed, so the service's own defaults are what
    gets tested, except WORKERS: one process unless a test asks for more, since `auto` depends
    on the machine's CPUs. stdout and stderr go to `log_dir/service-<port>.log`.
    """
    port = free_port()
    full_env = {
        "PATH": os.environ.get("PATH", ""),
        "MODEL_PATH": str(model),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PYTHONDONTWRITEBYTECODE": "1",
        "WORKERS": "1",
        **env,
    }
    log_path = log_dir / f"service-{port}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen([python, "-m", "service"], cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    svc = ServiceProcess(proc, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"`python -m service` exited with {proc.returncode}:\n{svc.log_tail()}")
        if http_status(f"{svc.url}/ready", timeout=1.0) == 200:
            return svc
        time.sleep(0.05)
    stop_service(svc)
    raise AssertionError(f"service not ready within {timeout:.0f} s:\n{svc.log_tail()}")


def server_pids(svc: ServiceProcess) -> list[int]:
    """The server's process and its children: with WORKERS > 1, the supervisor and then its workers."""
    children = []
    for task in Path(f"/proc/{svc.proc.pid}/task").iterdir():
        children += [int(pid) for pid in (task / "children").read_text().split()]
    return [svc.proc.pid, *children]


def stop_service(svc: ServiceProcess) -> None:
    """SIGTERM (graceful drain), then SIGKILL if it hangs."""
    if svc.proc.poll() is None:
        svc.proc.terminate()
        try:
            svc.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            svc.proc.kill()
            svc.proc.wait(timeout=10)


def send_prediction(url: str, image: Path) -> dict:
    """POST an image file to /predict through deploy/httpclient.py, the client the ops scripts use."""
    sys.path.insert(0, str(REPO / "deploy"))
    from httpclient import predict

    resp = predict(url, image)
    assert resp.status == 200, f"/predict answered {resp.status}: {resp.body[:300]!r}"
    return json.loads(resp.body)
