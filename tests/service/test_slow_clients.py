"""Slow and idle clients against the real `python -m service`: read deadlines, the keep-alive
timeout and the open-connection cap (service/connections.py), with short limits set by env.

Timings are generous: CI has 2 cores that other jobs may be using.
"""

from __future__ import annotations

import resource
import select
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from service.config import ConfigError
from service.connections import OWN_FDS, ensure_fd_budget
from tests.helpers.images import RED, image_bytes
from tests.helpers.prometheus import metric
from tests.helpers.service_process import REPO, start_service, stop_service

CAT = (REPO / "deploy" / "samples" / "cat.jpg").read_bytes()
HALF_HEAD = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty"


def open_half_sent(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(HALF_HEAD)
        socks.append(sock)
    return socks


def wait_closed(socks: list[socket.socket], deadline: float) -> dict[socket.socket, tuple[float, bytes]]:
    """When each socket was closed by the server, and what it sent first."""
    closed: dict[socket.socket, tuple[float, bytes]] = {}
    while len(closed) < len(socks) and time.monotonic() < deadline:
        readable, _, _ = select.select([s for s in socks if s not in closed], [], [], 0.2)
        for sock in readable:
            first = sock.recv(65536)
            while chunk := sock.recv(65536):  # up to EOF
                first += chunk
            closed[sock] = (time.monotonic(), first)
    return closed


def exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send one request on a keep-alive socket and read one response (Content-Length framed)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


GET_HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def gauge(sock: socket.socket, name: str) -> float:
    """A metric's value, scraped over an already open keep-alive connection."""
    exposition = exchange(sock, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").decode()
    return float(next(line.rsplit(" ", 1)[1] for line in exposition.splitlines() if line.startswith(name + " ")))


def wait_for_open_connections(sock: socket.socket, expected: int) -> None:
    deadline = time.monotonic() + 10
    while gauge(sock, "catsdogs_open_connections") != expected:
        assert time.monotonic() < deadline, f"open connections never settled at {expected}"
        time.sleep(0.1)


@pytest.mark.slow
def test_500_half_sent_heads_are_closed_in_time_while_health_and_predict_answer(tmp_path: Path, workers: str) -> None:
    timeout = 3
    svc = start_service(REPO / "models" / "model.onnx", tmp_path, READ_TIMEOUT_S=str(timeout), WORKERS=workers)
    try:
        opened = time.monotonic()
        socks = open_half_sent(svc.port, 500)
        answers: list[tuple[int, int, str, float]] = []
        stop = threading.Event()

        def probe() -> None:
            with httpx.Client(base_url=svc.url, timeout=30) as client:
                while not stop.is_set():
                    start = time.monotonic()
                    health = client.get("/health").status_code
                    predicted = client.post("/predict", files={"file": ("cat.jpg", CAT)})
                    label = predicted.json().get("predicted_class", "")
                    answers.append((health, predicted.status_code, label, time.monotonic() - start))
                    time.sleep(0.2)

        prober = threading.Thread(target=probe)
        prober.start()
        closed = wait_closed(socks, opened + timeout + 10)
        stop.set()
        prober.join(timeout=60)
        assert len(closed) == 500, f"{500 - len(closed)} half-sent connections still open after {timeout + 10} s"
        first_close = min(at for at, _ in closed.values()) - opened
        assert first_close >= timeout - 0.5, f"closed after {first_close:.1f} s, before READ_TIMEOUT_S={timeout}"
        assert all(first.startswith(b"HTTP/1.1 408 ") for _, first in closed.values())
        assert b'"request_timeout"' in next(iter(closed.values()))[1]
        assert len(answers) >= 5, answers  # probes ran throughout
        assert all(answer[:3] == (200, 200, "cat") for answer in answers), answers
        assert max(seconds for *_, seconds in answers) < 5, answers
        assert metric(svc, 'catsdogs_connections_closed_total{reason="read_timeout"}') == 500
        for sock in socks:
            sock.close()
    finally:
        stop_service(svc)


def test_a_body_that_stalls_gets_408_and_gives_back_its_in_flight_slot(model_path: Path, tmp_path: Path) -> None:
    svc = start_service(model_path, tmp_path, READ_TIMEOUT_S="2", MAX_IN_FLIGHT="1")
    try:
        stalled = socket.create_connection(("127.0.0.1", svc.port))
        body = image_bytes(RED)
        stalled.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body[:100])
        )
        deadline = time.monotonic() + 10
        while metric(svc, "catsdogs_http_requests_in_flight") < 2:  # the stalled request + this /metrics call
            assert time.monotonic() < deadline, "the stalled request never reached the handler"
            time.sleep(0.05)
        busy = httpx.post(f"{svc.url}/predict", content=body, headers={"content-type": "image/jpeg"})
        assert busy.status_code == 503 and busy.json()["error"] == "overloaded"  # the stalled body holds the slot
        closed = wait_closed([stalled], time.monotonic() + 2 + 10)
        assert closed and next(iter(closed.values()))[1].startswith(b"HTTP/1.1 408 ")
        stalled.close()
        after = httpx.post(f"{svc.url}/predict", content=body, headers={"content-type": "image/jpeg"})
        assert after.status_code == 200  # the slot came back
        line = svc.wait_for_log(lambda e: e.get("status") == 499)
        assert line["route"] == "/predict"
        assert metric(svc, 'catsdogs_http_requests_total{method="POST",route="/predict",status="499"}') == 1
        assert 'status="500"' not in httpx.get(f"{svc.url}/metrics").text  # not counted as a server error
    finally:
        stop_service(svc)


def test_silent_idle_and_half_sent_keep_alive_connections_are_closed(
    model_path: Path, tmp_path: Path, workers: str
) -> None:
    svc = start_service(model_path, tmp_path, READ_TIMEOUT_S="2", KEEP_ALIVE_TIMEOUT_S="1", WORKERS=workers)
    try:
        silent = socket.create_connection(("127.0.0.1", svc.port))  # connects, never sends a byte
        idle = socket.create_connection(("127.0.0.1", svc.port))
        reused = socket.create_connection(("127.0.0.1", svc.port))  # one good request, then half a head
        for sock in (idle, reused):
            assert exchange(sock, GET_HEALTH).startswith(b"HTTP/1.1 200 ")
        reused.sendall(HALF_HEAD)
        answered = time.monotonic()
        closed = wait_closed([silent, idle, reused], answered + 12)
        assert set(closed) == {silent, idle, reused}
        assert closed[idle][1] == b"" and closed[idle][0] - answered < 1 + 5  # keep-alive: a plain close
        assert closed[silent][1].startswith(b"HTTP/1.1 408 ")
        assert closed[reused][1].startswith(b"HTTP/1.1 408 ")
        for sock in (silent, idle, reused):
            sock.close()
    finally:
        stop_service(svc)


def test_connections_past_the_cap_get_503_and_admitted_ones_keep_working(model_path: Path, tmp_path: Path) -> None:
    cap = 5
    svc = start_service(model_path, tmp_path, MAX_CONNECTIONS=str(cap))
    admitted = [socket.create_connection(("127.0.0.1", svc.port))]
    try:
        wait_for_open_connections(admitted[0], 1)  # start_service's own probes have let go
        admitted += [socket.create_connection(("127.0.0.1", svc.port)) for _ in range(cap - 1)]
        for sock in admitted:
            assert exchange(sock, GET_HEALTH).startswith(b"HTTP/1.1 200 ")
        extra = socket.create_connection(("127.0.0.1", svc.port))
        start = time.monotonic()
        refused = exchange(extra, GET_HEALTH)
        assert time.monotonic() - start < 2
        assert refused.startswith(b"HTTP/1.1 503 ") and b'"too_many_connections"' in refused
        assert b"retry-after: 1" in refused.lower() and b"MAX_CONNECTIONS" in refused
        assert wait_closed([extra], time.monotonic() + 5), "the refused connection was left open"
        extra.close()
        for sock in admitted:  # the admitted ones are untouched
            assert exchange(sock, GET_HEALTH).startswith(b"HTTP/1.1 200 ")
        admitted.pop().close()
        wait_for_open_connections(admitted[0], cap - 1)
        with socket.create_connection(("127.0.0.1", svc.port)) as again:  # the freed place is taken again
            assert exchange(again, GET_HEALTH).startswith(b"HTTP/1.1 200 ")
        assert gauge(admitted[0], 'catsdogs_connections_closed_total{reason="over_capacity"}') == 1
    finally:
        for sock in admitted:
            sock.close()
        stop_service(svc)


def test_the_open_files_limit_is_raised_to_fit_max_connections_or_named(monkeypatch: pytest.MonkeyPatch) -> None:
    raised: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "setrlimit", lambda _, limits: raised.append(limits))
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    ensure_fd_budget(2000)
    assert raised == [(2000 + OWN_FDS, 4096)]
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 1024))
    with pytest.raises(ConfigError, match="MAX_CONNECTIONS=2000 .* at most 960"):
        ensure_fd_budget(2000)
