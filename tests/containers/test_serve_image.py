"""The serve image, built from Dockerfile.serve and run as production runs it: read-only root
filesystem with a tmpfs, no capabilities, host network on loopback."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.containers.engine import Engine, require
from tests.containers.images import BuiltImage
from tests.helpers.network import free_port, http_status
from tests.helpers.paths import REPO

pytestmark = pytest.mark.slow

SAMPLES = REPO / "deploy" / "samples"
PROJECT_LAYERS_BUDGET_MB = 175  # venv (~164 MB) + model + app, on top of whichever base
HEALTHY_WITHIN_S = 150  # first HEALTHCHECK probe runs after its 15 s interval; slack for a loaded CI box


@dataclass(frozen=True)
class Container:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def run_serve(engine: Engine, image: str, name: str, timeout: float = 120) -> Container:
    """Start the image read-only (a tmpfs for uploads) and return once /ready answers 200."""
    engine.run("rm", "--force", name, check=False)
    port = free_port()
    engine.run(
        "run", "--detach", f"--name={name}", "--network=host", "--read-only", "--tmpfs=/tmp",
        "--cap-drop=ALL", "--security-opt=no-new-privileges", "--env=HOST=127.0.0.1", f"--env=PORT={port}", image,
    )  # fmt: skip
    container = Container(name, port)
    deadline = time.monotonic() + timeout
    while http_status(f"{container.url}/ready") != 200:
        if engine.inspect("{{.State.Running}}", name) != "true" or time.monotonic() > deadline:
            logs = engine.run("logs", name, check=False)
            raise AssertionError(f"{name} never became ready:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        time.sleep(0.5)
    return container


@pytest.fixture(scope="module")
def serve_container(engine: Engine, serve_image: BuiltImage) -> Iterator[Container]:
    container = run_serve(engine, serve_image.tag, "catsdogs-serve-test")
    try:
        yield container
    finally:
        engine.run("rm", "--force", container.name, check=False)


def test_project_layers_fit_the_budget_on_top_of_the_base(engine: Engine, serve_image: BuiltImage) -> None:
    layers = json.loads(engine.inspect("{{json .RootFS.Layers}}", serve_image.tag))
    base_layers = json.loads(engine.inspect("{{json .RootFS.Layers}}", serve_image.base))
    assert layers[: len(base_layers)] == base_layers, "the serve image is not built on the base it was given"
    image_mb, base_mb = engine.image_bytes(serve_image.tag) / 1e6, engine.image_bytes(serve_image.base) / 1e6
    figures = {"image_mb": round(image_mb, 1), "base_mb": round(base_mb, 1), "project_mb": round(image_mb - base_mb, 1)}
    print(f"\nserve image: {json.dumps(figures | {'build_s': round(serve_image.build_s, 1)})}")
    assert image_mb - base_mb <= PROJECT_LAYERS_BUDGET_MB, (
        f"project layers over {PROJECT_LAYERS_BUDGET_MB} MB: {figures}"
    )


def test_image_can_import_onnxruntime_but_not_torch_or_onnx(engine: Engine, serve_image: BuiltImage) -> None:
    probe = (
        "import importlib.util as u, json; "
        "print(json.dumps({m: u.find_spec(m) is not None for m in ('onnxruntime', 'torch', 'torchvision', 'onnx')}))"
    )
    out = engine.run("run", "--rm", "--network=none", "--read-only", serve_image.tag, "python", "-c", probe).stdout
    assert json.loads(out) == {"onnxruntime": True, "torch": False, "torchvision": False, "onnx": False}


def test_service_runs_as_non_root_on_a_read_only_root(engine: Engine, serve_container: Container) -> None:
    status = engine.run("exec", serve_container.name, "cat", "/proc/1/status").stdout
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == ["10001"] * 4, f"the service (PID 1) runs with uids {uids}"
    assert engine.inspect("{{.HostConfig.ReadonlyRootfs}}", serve_container.name) == "true"
    write = engine.run("exec", serve_container.name, "python", "-c", "open('/app/probe', 'w')", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr
    engine.run("exec", serve_container.name, "python", "-c", "open('/tmp/probe', 'w').write('uploads spool here')")


def test_healthcheck_turns_healthy(engine: Engine, serve_container: Container) -> None:
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    health: dict = {}
    while time.monotonic() < deadline:
        health = json.loads(engine.inspect("{{json .State.Health}}", serve_container.name))
        if health["Status"] != "starting":
            break
        time.sleep(1)
    assert health.get("Status") == "healthy", f"HEALTHCHECK says {json.dumps(health)[-2000:]}"
    assert health["Log"][-1]["ExitCode"] == 0


@pytest.mark.parametrize("label", ["cat", "dog"])
def test_ready_and_curl_predict_get_each_sample_right(serve_container: Container, label: str) -> None:
    assert http_status(f"{serve_container.url}/ready") == 200
    answer = subprocess.run(
        [
            require("curl"),
            "-sS",
            "--fail-with-body",
            "-F",
            f"file=@{SAMPLES / label}.jpg",
            f"{serve_container.url}/predict",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr
    assert json.loads(answer.stdout)["predicted_class"] == label, answer.stdout


def multipart(path: Path) -> tuple[bytes, str]:
    boundary = "catsdogs-stop-test"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n\r\n'
    return head.encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), boundary


def wait_for_log(engine: Engine, name: str, message: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = engine.run("logs", name).stdout
        if any(json.loads(line).get("message") == message for line in logs.splitlines() if line.startswith("{")):
            return
        time.sleep(0.1)
    raise AssertionError(f"no {message!r} log line from {name} within {timeout:.0f} s")


def test_docker_stop_lets_the_in_flight_request_finish(engine: Engine, serve_image: BuiltImage) -> None:
    container = run_serve(engine, serve_image.tag, "catsdogs-stop-test")
    try:
        body, boundary = multipart(SAMPLES / "cat.jpg")
        head = (
            "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", container.port), timeout=60) as sock:
            # In flight: the headers and half the upload are in when the stop begins.
            sock.sendall(head.encode() + body[: len(body) // 2])
            started = time.monotonic()
            stop = subprocess.Popen(
                [engine.docker, "stop", container.name], env=engine.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            wait_for_log(engine, container.name, "Shutting down")
            sock.sendall(body[len(body) // 2 :])
            response = http.client.HTTPResponse(sock)
            response.begin()
            answer = response.read()
        assert response.status == 200, answer
        assert json.loads(answer)["predicted_class"] == "cat"
        assert stop.wait(timeout=60) == 0, stop.communicate()
        stopped_in = time.monotonic() - started
        exit_code = int(engine.inspect("{{.State.ExitCode}}", container.name))
        # docker stop's grace period is 10 s; SIGKILL after it would show as exit code 137.
        assert exit_code == 0 and stopped_in < 10, f"exit code {exit_code} after {stopped_in:.1f} s"
    finally:
        engine.run("rm", "--force", container.name, check=False)
