"""docker-compose.yml brought up for real with docker-compose 1.29: api, prometheus and mlflow.

A generated override only moves each service onto the host network (no bridge here) at free
loopback ports; commands and healthchecks are the compose file's own with the port swapped.
Host networking publishes no ports: Docker discards them, but docker-compose 1.29 refuses them
and an override cannot remove list entries, so what goes up is `docker-compose config` of the
two files without `ports`.
Grafana is not started, as no image of it can be had here; its dashboard is checked offline
in tests/ops/test_monitoring_live.py.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml

from tests.containers import standins
from tests.containers.engine import Engine, require
from tests.containers.images import BuiltImage
from tests.helpers.network import free_port, http_status
from tests.helpers.paths import REPO

pytestmark = pytest.mark.slow

PROJECT = "catsdogs-ci"
LIVE = ("api", "prometheus", "mlflow")
HEALTHY_WITHIN_S = 600  # MLflow alone took 4 min to start on a 2-core box busy with training
SAMPLES = REPO / "deploy" / "samples"
STEADY_AFTER_S = 60


@dataclass(frozen=True)
class Stack:
    engine: Engine
    files: tuple[Path, ...]
    ports: dict[str, int]
    up_at: float = 0.0  # time.monotonic() of `up`

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        files = [arg for path in self.files for arg in ("--file", str(path))]
        proc = subprocess.run(
            [require("docker-compose"), "--project-name", PROJECT, "--project-directory", str(REPO), *files, *args],
            env=self.engine.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, f"docker-compose {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
        return proc

    def container(self, service: str) -> str:
        return self.compose("ps", "--quiet", service).stdout.strip()


def with_port(strings: list[str], old: int, new: int) -> list[str]:
    swapped = [s.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}") for s in strings]
    assert swapped != strings, f"expected 127.0.0.1:{old} in {strings}"
    return swapped


def host_network_override(base: dict, ports: dict[str, int], prometheus_config: Path) -> dict:
    services = base["services"]
    mlflow_command = list(services["mlflow"]["command"])
    mlflow_command[mlflow_command.index("--host") + 1] = "127.0.0.1"
    mlflow_command[mlflow_command.index("--port") + 1] = str(ports["mlflow"])
    return {
        "services": {
            "api": {
                "network_mode": "host",
                "environment": {"HOST": "127.0.0.1", "PORT": str(ports["api"])},
            },
            "prometheus": {
                "network_mode": "host",
                "command": [
                    *services["prometheus"]["command"],
                    f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                ],
                "volumes": [f"{prometheus_config}:/etc/prometheus/prometheus.yml:ro"],
                "healthcheck": {
                    "test": with_port(services["prometheus"]["healthcheck"]["test"], 9090, ports["prometheus"])
                },
            },
            "mlflow": {
                "network_mode": "host",
                "command": mlflow_command,
                "healthcheck": {"test": with_port(services["mlflow"]["healthcheck"]["test"], 5000, ports["mlflow"])},
            },
        }
    }


def loopback_prometheus_config(ports: dict[str, int]) -> dict:
    """monitoring/prometheus.yml with the targets on loopback and a quicker scrape of the api."""
    config = yaml.safe_load((REPO / "monitoring" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["catsdogs-api"]["static_configs"][0]["targets"] = [f"127.0.0.1:{ports['api']}"]
    jobs["catsdogs-api"]["scrape_interval"], jobs["catsdogs-api"]["scrape_timeout"] = "2s", "1s"
    jobs["prometheus"]["static_configs"][0]["targets"] = [f"127.0.0.1:{ports['prometheus']}"]
    return config


def wait_healthy(stack: Stack, services: tuple[str, ...]) -> None:
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        status = {s: stack.engine.inspect("{{.State.Health.Status}}", stack.container(s)) for s in services}
        if all(value == "healthy" for value in status.values()):
            return
        time.sleep(2)
    logs = stack.compose("logs", "--no-color", "--tail=30", *services).stdout
    raise AssertionError(f"not healthy within {HEALTHY_WITHIN_S} s: {status}\n{logs[-4000:]}")


@pytest.fixture(scope="module")
def stack(engine: Engine, serve_image: BuiltImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    standins.ensure_prometheus(engine)
    standins.ensure_mlflow(engine)
    work = tmp_path_factory.mktemp("compose")
    ports = {service: free_port() for service in LIVE}
    prometheus_config = work / "prometheus.yml"
    prometheus_config.write_text(yaml.safe_dump(loopback_prometheus_config(ports), sort_keys=False))
    prometheus_config.chmod(0o644)  # read by the container's `nobody`
    base = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    override = work / "docker-compose.host-network.yml"
    override.write_text(yaml.safe_dump(host_network_override(base, ports, prometheus_config), sort_keys=False))
    merged = yaml.safe_load(Stack(engine, (REPO / "docker-compose.yml", override), ports).compose("config").stdout)
    for service in merged["services"].values():
        service.pop("ports", None)
    resolved = work / "docker-compose.resolved.yml"
    resolved.write_text(yaml.safe_dump(merged, sort_keys=False))
    running = Stack(engine, (resolved,), ports)
    running.compose("down", "--volumes", "--remove-orphans")  # whatever an interrupted run left
    try:
        running.compose("up", "--detach", "--no-build", *LIVE)
        running = replace(running, up_at=time.monotonic())
        wait_healthy(running, LIVE)
        yield running
    finally:
        running.compose("down", "--volumes", "--remove-orphans")


def query(stack: Stack, expr: str) -> list[dict]:
    url = f"{stack.url('prometheus')}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        answer = json.loads(resp.read())
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_prometheus_scrapes_the_api_container(stack: Stack) -> None:
    for label in ("cat", "dog"):
        body = subprocess.run(
            [
                require("curl"),
                "-sS",
                "--fail-with-body",
                "-F",
                f"file=@{SAMPLES / label}.jpg",
                f"{stack.url('api')}/predict",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert body.returncode == 0 and json.loads(body.stdout)["predicted_class"] == label, body.stdout + body.stderr
    expr = 'sum by (predicted_class) (catsdogs_predictions_total{job="catsdogs-api"})'
    deadline = time.monotonic() + 60
    counts: dict[str, float] = {}
    while time.monotonic() < deadline:
        counts = {r["metric"]["predicted_class"]: float(r["value"][1]) for r in query(stack, expr)}
        if counts == {"cat": 1.0, "dog": 1.0}:
            break
        time.sleep(1)
    assert counts == {"cat": 1.0, "dog": 1.0}, f"Prometheus answers {counts} for {expr}"
    up = query(stack, 'up{job="catsdogs-api"}')
    assert [(r["metric"]["instance"], r["value"][1]) for r in up] == [(f"127.0.0.1:{stack.ports['api']}", "1")]


def test_prometheus_loads_the_alert_rules(stack: Stack) -> None:
    with urllib.request.urlopen(f"{stack.url('prometheus')}/api/v1/rules", timeout=10) as resp:
        groups = json.loads(resp.read())["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    assert "CatsDogsApiDown" in loaded, loaded


def mlflow_api(stack: Stack, path: str, body: dict | None = None) -> dict:
    """A REST call as the train container makes it (Host mlflow:5000); the server's log if it fails."""
    request = urllib.request.Request(
        f"{stack.url('mlflow')}/api/2.0/mlflow/{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Host": "mlflow:5000", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return json.loads(resp.read())
    except OSError as exc:
        logs = stack.compose("logs", "--no-color", "--tail=40", "mlflow").stdout
        raise AssertionError(f"MLflow {path}: {exc!r}\n{logs[-4000:]}") from exc


def test_mlflow_answers_and_stores_an_experiment(stack: Stack) -> None:
    assert http_status(f"{stack.url('mlflow')}/health") == 200
    experiment_id = mlflow_api(stack, "experiments/create", {"name": "compose-check"})["experiment_id"]
    found = mlflow_api(stack, f"experiments/get?experiment_id={experiment_id}")
    assert found["experiment"]["name"] == "compose-check"


def test_no_service_restarts_or_runs_out_of_memory_in_its_first_minute(stack: Stack) -> None:
    """Within compose's memory limits nothing crash-loops. (MLflow's job runner once took it past
    its 1 GB 20 s after start, healthy or not, and the restart policy brought it back, forever.)"""
    time.sleep(max(0.0, stack.up_at + STEADY_AFTER_S - time.monotonic()))
    states = {s: stack.engine.inspect("{{.RestartCount}} {{.State.OOMKilled}}", stack.container(s)) for s in LIVE}
    assert states == dict.fromkeys(LIVE, "0 false"), f"restart count and OOM-killed flag per service: {states}"


def test_compose_down_leaves_no_container_running(stack: Stack) -> None:
    stack.compose("down", "--volumes", "--remove-orphans")
    left = stack.engine.run("ps", "--all", "--quiet").stdout.split()
    assert not left, f"containers left after docker-compose down: {left}"
    volumes = stack.engine.run("volume", "ls", "--quiet", f"--filter=label=com.docker.compose.project={PROJECT}")
    assert not volumes.stdout.split(), volumes.stdout
