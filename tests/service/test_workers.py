"""WORKERS=2: two real worker processes under the supervisor, driven over HTTP.

Which worker takes a connection is the kernel's choice, so tests that need both use many fresh
connections and read the `worker_pid` of each access-log line.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.images import BLUE, RED, image_bytes, slow_batch
from tests.helpers.onnx_models import build_model, swap_model
from tests.helpers.prometheus import metric
from tests.helpers.service_process import ServiceProcess, server_pids, start_service, stop_service


@pytest.fixture
def pair(model_path: Path, tmp_path: Path) -> Iterator[ServiceProcess]:
    srv = start_service(model_path, tmp_path, WORKERS="2", ADMIN_TOKEN="s3cret", MAX_BATCH_FILES="64")
    yield srv
    stop_service(srv)


def listening(server: ServiceProcess) -> dict[str, object]:
    return server.wait_for_log(lambda e: e.get("message") == "listening")


def pids_that_answered(server: ServiceProcess, route: str) -> list[int]:
    return [int(e["worker_pid"]) for e in server.log_lines() if e.get("route") == route]  # type: ignore[arg-type]


def fresh_connections(server: ServiceProcess, count: int, method: str, path: str, **kwargs: object) -> list[int]:
    """`count` requests, each on its own connection, so the kernel picks a worker each time; the statuses."""
    return [httpx.request(method, f"{server.url}{path}", **kwargs).status_code for _ in range(count)]  # type: ignore[arg-type]


def test_both_workers_serve_and_metrics_add_their_counts_up(pair: ServiceProcess) -> None:
    started = listening(pair)
    assert len(started["pids"]) == 2 and started["workers"] == 2  # type: ignore[arg-type]
    assert server_pids(pair)[1:] == started["pids"]
    statuses = fresh_connections(pair, 40, "POST", "/predict", files={"file": ("a.jpg", image_bytes(RED))})
    assert statuses == [200] * 40
    pair.wait_for_log(lambda e: len(pids_that_answered(pair, "/predict")) == 40)
    assert set(pids_that_answered(pair, "/predict")) == set(started["pids"])  # type: ignore[arg-type]
    # Whichever worker answers the scrape, it reports the whole server.
    for _ in range(6):
        assert metric(pair, 'catsdogs_http_requests_total{method="POST",route="/predict",status="200"}') == 40
        assert metric(pair, 'catsdogs_predictions_total{predicted_class="cat"}') == 40
        assert metric(pair, "catsdogs_inference_duration_seconds_count") == 40
    assert len(set(pids_that_answered(pair, "/metrics"))) == 2


def test_ready_is_503_until_every_worker_has_loaded_the_model(pair: ServiceProcess) -> None:
    pair.wait_for_log(lambda e: e.get("route") == "/ready" and e.get("status") == 200)  # logged after it is sent
    lines = pair.log_lines()
    loads = [i for i, e in enumerate(lines) if e.get("message") == "model loaded"]
    assert len(loads) == 2
    answers = [(i, e["status"]) for i, e in enumerate(lines) if e.get("route") == "/ready"]
    assert all(status == 503 for i, status in answers if i < max(loads)), answers


def test_a_reload_reaches_both_workers_and_a_bad_one_changes_none(pair: ServiceProcess, model_path: Path) -> None:
    auth = {"Authorization": "Bearer s3cret"}
    swap_model(model_path, version="v2")
    ok = httpx.post(f"{pair.url}/admin/reload", headers=auth)
    assert ok.status_code == 200 and ok.json()["model_version"] == "v2"
    # Once the reload has returned, no worker shows the old version.
    versions = [httpx.get(f"{pair.url}/model").json()["model_version"] for _ in range(30)]
    assert versions == ["v2"] * 30
    assert len(set(pids_that_answered(pair, "/model"))) == 2
    assert metric(pair, 'catsdogs_model_reloads_total{result="success"}') == 1  # one reload, counted once
    assert 'model_version="v1"' not in httpx.get(f"{pair.url}/metrics").text

    swap_model(model_path, version="v3", softmax=False)  # logits, not probabilities: refused by the validator
    bad = httpx.post(f"{pair.url}/admin/reload", headers=auth)
    assert bad.status_code == 422 and "still serving model_version v2" in bad.json()["detail"]
    versions = [httpx.get(f"{pair.url}/model").json()["model_version"] for _ in range(30)]
    assert versions == ["v2"] * 30


def test_sighup_to_the_supervisor_reloads_every_worker(pair: ServiceProcess, model_path: Path) -> None:
    swap_model(model_path, version="v4")
    pair.proc.send_signal(signal.SIGHUP)
    pair.wait_for_log(lambda e: e.get("message") == "model reloaded" and e.get("model_version") == "v4")
    switched = pair.wait_for_log(lambda e: e.get("message") == "model switched" and e.get("model_version") == "v4")
    reloaded = next(e for e in pair.log_lines() if e.get("message") == "model reloaded")
    assert {switched["worker"], reloaded["worker"]} == {0, 1}
    responses = [httpx.post(f"{pair.url}/predict", files={"file": ("b.jpg", image_bytes(BLUE))}) for _ in range(20)]
    assert {(r.status_code, r.json()["model_version"], r.json()["predicted_class"]) for r in responses} == {
        (200, "v4", "dog")
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
def test_sigterm_drains_the_in_flight_requests_of_both_workers(pair: ServiceProcess) -> None:
    results: list[httpx.Response] = []
    senders: list[threading.Thread] = []
    workers = server_pids(pair)[1:]
    idle = {pid: cpu_seconds(pid) for pid in workers}
    # The kernel hashes each connection to a worker: add slow batches until both are decoding one.
    while any(cpu_seconds(pid) - idle[pid] < 0.05 for pid in workers):
        assert len(senders) < 20, "20 batches and still one worker idle"
        senders.append(
            threading.Thread(
                target=lambda: results.append(httpx.post(f"{pair.url}/predict/batch", files=slow_batch(16), timeout=60))
            )
        )
        senders[-1].start()
        time.sleep(0.3)
    deadline = time.monotonic() + 15
    # Every batch not answered yet is inside a worker (+1: this /metrics call), none still connecting.
    while metric(pair, "catsdogs_http_requests_in_flight") < len(senders) - len(results) + 1:
        assert time.monotonic() < deadline, "not every batch reached a worker"
        time.sleep(0.02)
    pair.proc.send_signal(signal.SIGTERM)
    for sender in senders:
        sender.join()
    assert pair.proc.wait(timeout=40) == 0
    assert not Path(str(listening(pair)["run_dir"])).exists()  # metrics files and staged models removed
    assert [r.status_code for r in results] == [200] * len(senders)
    assert all([x["predicted_class"] for x in r.json()["results"]] == ["cat"] * 16 for r in results)
    assert len(set(pids_that_answered(pair, "/predict/batch"))) == 2  # both workers finished theirs
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{pair.url}/health")


def test_a_killed_worker_is_restarted_and_counted(pair: ServiceProcess) -> None:
    victim, survivor = listening(pair)["pids"]  # type: ignore[misc]
    os.kill(victim, signal.SIGKILL)
    pair.wait_for_log(lambda e: "restarting it" in str(e.get("message")) and e.get("level") == "error")
    pair.wait_for_log(lambda e: e.get("message") == "model loaded" and e.get("worker_pid") not in (victim, survivor))
    pids = server_pids(pair)[1:]
    assert survivor in pids and victim not in pids and len(pids) == 2
    assert metric(pair, "catsdogs_worker_restarts_total") == 1
    statuses = fresh_connections(pair, 30, "POST", "/predict", files={"file": ("a.jpg", image_bytes(RED))})
    assert statuses == [200] * 30
    assert set(pids_that_answered(pair, "/predict")) == set(pids)


def test_a_crash_loop_stops_the_server_with_one_clear_line(pair: ServiceProcess) -> None:
    run_dir = Path(str(listening(pair)["run_dir"]))
    generation = json.loads((run_dir / "generation.json").read_text())
    Path(generation["staged"]).write_bytes(b"not a model any more")  # every restarted worker fails to load
    os.kill(listening(pair)["pids"][0], signal.SIGKILL)  # type: ignore[index]
    assert pair.proc.wait(timeout=120) == 1
    critical = [
        e for e in pair.log_lines() if e.get("level") == "critical" and e.get("logger") == "catsdogs.supervisor"
    ]
    assert len(critical) == 1 and "crash loop" in str(critical[0]["message"])
    assert not run_dir.exists()  # the run directory is cleaned up on the way out


@pytest.mark.slow
def test_overload_on_every_worker_is_503_with_retry_after_never_another_error(model_path: Path, tmp_path: Path) -> None:
    srv = start_service(model_path, tmp_path, WORKERS="2", MAX_IN_FLIGHT="1", MAX_BATCH_FILES="64")
    try:
        results: list[httpx.Response] = []
        senders = [
            threading.Thread(
                target=lambda: results.append(httpx.post(f"{srv.url}/predict/batch", files=slow_batch(16), timeout=60))
            )
            for _ in range(6)
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        statuses = sorted(r.status_code for r in results)
        assert set(statuses) == {200, 503}, statuses  # at most one in flight per worker: the rest are refused
        refused = [r for r in results if r.status_code == 503]
        assert all(r.headers["retry-after"] == "1" and r.json()["error"] == "overloaded" for r in refused)
        assert metric(srv, 'catsdogs_rejections_total{reason="overloaded"}') == len(refused)
    finally:
        stop_service(srv)


def test_a_model_that_cannot_load_stops_start_up_with_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(AssertionError, match="exited with 1") as failure:
        start_service(broken, tmp_path, WORKERS="2")
    critical = [line for line in str(failure.value).splitlines() if '"level": "critical"' in line]
    assert len(critical) == 1 and "onnxruntime cannot load" in critical[0]


def test_a_restarted_worker_serves_the_reloaded_model_not_whatever_model_path_holds_now(
    pair: ServiceProcess, model_path: Path
) -> None:
    swap_model(model_path, version="v5")
    assert httpx.post(f"{pair.url}/admin/reload", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    build_model(model_path, version="v6")  # MODEL_PATH moves on, but no reload was asked for
    os.kill(server_pids(pair)[1], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while metric(pair, "catsdogs_worker_restarts_total") < 1:  # counted once the new worker has loaded
        assert time.monotonic() < deadline, "the killed worker never came back"
        time.sleep(0.1)
    versions = {httpx.get(f"{pair.url}/model").json()["model_version"] for _ in range(30)}
    assert versions == {"v5"}
