"""The real thing: `python -m service` under uvicorn on 127.0.0.1, driven over HTTP."""

from __future__ import annotations

import select
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.images import BLUE, RED, image_bytes, png_header_bomb, slow_batch
from tests.helpers.onnx_models import swap_model
from tests.helpers.prometheus import metric
from tests.helpers.service_process import ServiceProcess, server_pids, start_service, stop_service


def read_response(sock: socket.socket) -> str:
    """Everything the server sends until it closes the connection (413s carry Connection: close)."""
    sock.settimeout(5)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data.decode(errors="replace")


def test_predict_over_real_http_and_json_log_line(server: ServiceProcess) -> None:
    response = httpx.post(
        f"{server.url}/predict", files={"file": ("a.jpg", image_bytes(BLUE))}, headers={"X-Request-ID": "http-rid-1"}
    )
    assert response.status_code == 200
    assert response.json()["predicted_class"] == "dog"
    assert response.headers["x-request-id"] == "http-rid-1"
    assert "server" not in response.headers
    line = server.wait_for_log(lambda e: e.get("request_id") == "http-rid-1")
    assert line["route"] == "/predict" and line["status"] == 200 and line["predicted_class"] == "dog"
    for entry in server.log_lines():  # every stdout line parsed as JSON; uvicorn's access log is off
        assert 'HTTP/1.1" 200' not in entry.get("message", "")


def test_content_length_over_limit_is_413_before_the_body_is_sent(any_server: ServiceProcess) -> None:
    with socket.create_connection(("127.0.0.1", any_server.port)) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 20000000\r\n\r\n"
        )  # announce 20 MB, send none of it
        head = read_response(sock)
    assert head.startswith("HTTP/1.1 413")
    assert '"payload_too_large"' in head


def test_chunked_upload_is_cut_off_with_413_once_past_the_limit(any_server: ServiceProcess) -> None:
    port = any_server.port
    chunk = b"\xff" * 65536
    sent = 0
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)  # little slack on our side
        sock.connect(("127.0.0.1", port))
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        try:
            while sent < 40 * 1024 * 1024:  # would be 40 MB; the limit is 10 MB
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                if select.select([sock], [], [], 0)[0]:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        head = read_response(sock)
    assert head.startswith("HTTP/1.1 413"), head[:200]
    assert '"payload_too_large"' in head
    # Answered long before the 40 MB end; the slack over 10 MB is the kernel's socket buffers.
    assert sent < 20 * 1024 * 1024


def test_decompression_bomb_is_refused_fast_with_bounded_server_memory(any_server: ServiceProcess) -> None:
    def peak_rss_kb() -> dict[int, int]:  # per server process: with workers, any of them may take the bomb
        peaks = {}
        for pid in server_pids(any_server):
            status = Path(f"/proc/{pid}/status").read_text()
            peaks[pid] = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
        return peaks

    bomb = png_header_bomb(30_000, 30_000)  # 900 M pixels: 900 MB+ if ever decoded
    before = peak_rss_kb()
    start = time.perf_counter()
    response = httpx.post(f"{any_server.url}/predict", files={"file": ("bomb.png", bomb)})
    elapsed = time.perf_counter() - start
    assert response.status_code == 422 and response.json()["error"] == "image_too_large"
    assert elapsed < 2.0
    after = peak_rss_kb()
    assert max(after[pid] - before[pid] for pid in before) < 50_000  # no server process's peak grew by 50 MB


def test_over_the_in_flight_bound_answers_503_with_retry_after(model_path: Path, tmp_path: Path) -> None:
    srv = start_service(model_path, tmp_path, MAX_IN_FLIGHT="1", MAX_BATCH_FILES="64")
    try:
        results: dict[str, httpx.Response] = {}
        slow = threading.Thread(
            target=lambda: results.update(
                batch=httpx.post(f"{srv.url}/predict/batch", files=slow_batch(16), timeout=60)
            )
        )
        slow.start()
        deadline = time.monotonic() + 10
        while metric(srv, "catsdogs_http_requests_in_flight") < 2:  # the batch + this /metrics call
            assert time.monotonic() < deadline, "the batch request never started"
            time.sleep(0.02)
        refused = httpx.post(f"{srv.url}/predict", files={"file": ("a.jpg", image_bytes())})
        slow.join()
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"] == "overloaded"
        assert results["batch"].status_code == 200
        assert metric(srv, 'catsdogs_rejections_total{reason="overloaded"}') == 1
        after = httpx.post(f"{srv.url}/predict", files={"file": ("a.jpg", image_bytes())})
        assert after.status_code == 200  # the slot was given back
    finally:
        stop_service(srv)


def test_sigterm_lets_the_in_flight_request_finish(model_path: Path, tmp_path: Path) -> None:
    srv = start_service(model_path, tmp_path, MAX_BATCH_FILES="64")
    results: dict[str, httpx.Response] = {}
    slow = threading.Thread(
        target=lambda: results.update(batch=httpx.post(f"{srv.url}/predict/batch", files=slow_batch(16), timeout=60))
    )
    slow.start()
    deadline = time.monotonic() + 10
    while metric(srv, "catsdogs_http_requests_in_flight") < 2:  # the batch + this /metrics call
        assert time.monotonic() < deadline, "the batch request never started"
        time.sleep(0.02)
    srv.proc.send_signal(signal.SIGTERM)
    slow.join()
    # uvicorn re-raises the captured SIGTERM once it has drained, so "killed by SIGTERM" is the clean exit.
    assert srv.proc.wait(timeout=30) in (0, -signal.SIGTERM)
    batch = results["batch"]
    assert batch.status_code == 200
    assert [r["predicted_class"] for r in batch.json()["results"]] == ["cat"] * 16
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{srv.url}/health")


def test_sighup_reloads_a_good_model_and_keeps_the_old_one_on_a_bad_one(
    server: ServiceProcess, model_path: Path
) -> None:
    swap_model(model_path, version="v2")
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_log(lambda e: e.get("message") == "model reloaded" and e.get("model_version") == "v2")
    assert httpx.get(f"{server.url}/model").json()["model_version"] == "v2"
    info = httpx.get(f"{server.url}/metrics").text
    assert 'catsdogs_model_info{data_version="data-test",model_version="v2"} 1.0' in info
    assert 'model_version="v1"' not in info  # only the live model's series
    assert 'catsdogs_model_reloads_total{result="success"} 1.0' in info

    model_path.write_bytes(b"this is not an onnx model")
    server.proc.send_signal(signal.SIGHUP)
    failure = server.wait_for_log(lambda e: e.get("message", "").startswith("model reload failed"))
    assert failure["level"] == "error" and failure["model_version"] == "v2"
    assert "onnxruntime cannot load" in failure["reason"]
    assert httpx.get(f"{server.url}/ready").status_code == 200
    response = httpx.post(f"{server.url}/predict", files={"file": ("a.jpg", image_bytes(RED))})
    assert response.status_code == 200 and response.json()["model_version"] == "v2"
    assert 'catsdogs_model_reloads_total{result="failure"} 1.0' in httpx.get(f"{server.url}/metrics").text


def test_admin_reload_needs_the_token_and_validates_before_swapping(server: ServiceProcess, model_path: Path) -> None:
    url = f"{server.url}/admin/reload"
    assert httpx.post(url).status_code == 401
    assert httpx.post(url, headers={"Authorization": "Bearer wrong"}).status_code == 403
    auth = {"Authorization": "Bearer s3cret"}

    swap_model(model_path, version="v3")
    ok = httpx.post(url, headers=auth)
    assert ok.status_code == 200
    assert ok.json() | {"sha256": None} == {
        "result": "success",
        "model_version": "v3",
        "previous_version": "v1",
        "sha256": None,
    }

    swap_model(model_path, version="v4", softmax=False)  # logits, not probabilities: must be refused
    bad = httpx.post(url, headers=auth)
    assert bad.status_code == 422
    assert bad.json()["error"] == "reload_failed"
    assert "still serving model_version v3" in bad.json()["detail"]
    assert httpx.get(f"{server.url}/model").json()["model_version"] == "v3"


def test_admin_reload_is_404_when_no_token_is_configured(model_path: Path, tmp_path: Path) -> None:
    srv = start_service(model_path, tmp_path)
    try:
        response = httpx.post(f"{srv.url}/admin/reload", headers={"Authorization": "Bearer anything"})
        assert response.status_code == 404
        assert "ADMIN_TOKEN" in response.json()["detail"]
    finally:
        stop_service(srv)
