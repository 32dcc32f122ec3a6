"""`python -m service` as a user runs it: every start-up failure is one JSON line that names the fix,
with a non-zero exit, and the traceback only at LOG_LEVEL=DEBUG."""

from __future__ import annotations

import errno
import json
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.listen import bind, bind_failure
from tests.helpers.network import free_port
from tests.helpers.service_process import REPO, start_service, stop_service


def run_service(
    env: dict[str, str], *, argv: tuple[str, ...] = ("-m", "service"), preexec: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": os.environ.get("PATH", ""), "HOST": "127.0.0.1", "PORT": str(free_port()), **env}
    return subprocess.run(
        [sys.executable, *argv],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=preexec,
    )


def the_one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The whole output is one JSON `critical` line with no traceback; its message."""
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) == 1, result.stdout + result.stderr
    entry = json.loads(lines[0])
    assert entry["level"] == "critical" and "exception" not in entry
    assert "Traceback" not in lines[0]
    assert entry["message"].startswith("cannot start: ")
    return str(entry["message"])


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_missing_model_is_one_line_naming_model_path(tmp_path: Path) -> None:
    result = run_service({"MODEL_PATH": str(tmp_path / "nope.onnx")})
    assert result.returncode == 1
    message = the_one_line(result)
    assert "no model file at" in message and "set MODEL_PATH" in message and "dvc repro export" in message


def test_corrupt_model_is_one_line_saying_re_export(tmp_path: Path) -> None:
    corrupt = tmp_path / "model.onnx"
    corrupt.write_bytes(b"not a protobuf at all" * 10)
    result = run_service({"MODEL_PATH": str(corrupt)})
    assert result.returncode == 1
    message = the_one_line(result)
    assert str(corrupt) in message and "re-export the model" in message


@pytest.mark.parametrize(
    "name,value,fix",
    [
        ("PORT", "eighty", "set PORT to a whole number between 0 and 65535"),
        ("LOG_LEVEL", "loud", "use one of DEBUG, INFO"),
        ("MAX_IN_FLIGHT", "0", "set MAX_IN_FLIGHT to a whole number >= 1"),
        ("MODEL_NAME", "a/b", "without '/'"),
    ],
)
def test_bad_setting_is_one_line_naming_the_variable_and_exits_2(
    model_path: Path, name: str, value: str, fix: str
) -> None:
    result = run_service({"MODEL_PATH": str(model_path), name: value})
    assert result.returncode == 2
    message = the_one_line(result)
    assert f"{name}={value!r}" in message and fix in message


def test_busy_port_is_one_line_naming_the_port_and_the_fix(model_path: Path, busy_port: int) -> None:
    result = run_service({"MODEL_PATH": str(model_path), "PORT": str(busy_port)})
    assert result.returncode == 1
    message = the_one_line(result)
    assert f"port {busy_port} on 127.0.0.1 is already in use" in message
    assert "set PORT to a free port" in message and "Errno" not in message


@pytest.mark.parametrize("host", ["10.255.255.1", "no-such-host.invalid"])
def test_host_that_cannot_be_bound_is_one_line_suggesting_a_host(model_path: Path, host: str) -> None:
    result = run_service({"MODEL_PATH": str(model_path), "HOST": host})
    assert result.returncode == 1
    message = the_one_line(result)
    assert host in message and "set HOST=127.0.0.1" in message and "HOST=0.0.0.0" in message


def test_open_files_limit_too_low_for_max_connections_is_one_line(model_path: Path) -> None:
    def low_hard_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    result = run_service({"MODEL_PATH": str(model_path), "MAX_CONNECTIONS": "1000"}, preexec=low_hard_limit)
    assert result.returncode == 2
    message = the_one_line(result)
    assert "lower MAX_CONNECTIONS to at most 192" in message


def test_unexpected_error_is_one_line_that_asks_for_the_debug_traceback(model_path: Path) -> None:
    boom = (
        "import sys, service.__main__ as m\n"
        "def create_app(settings):\n"
        "    raise RuntimeError('boom')\n"
        "m.create_app = create_app\n"
        "sys.exit(m.main())\n"
    )
    # One process: the patched create_app is the one that runs (workers would import their own).
    result = run_service({"MODEL_PATH": str(model_path), "WORKERS": "1"}, argv=("-c", boom))
    assert result.returncode == 1
    message = the_one_line(result)
    assert "unexpected RuntimeError: boom" in message and "LOG_LEVEL=DEBUG" in message


def test_debug_log_level_adds_the_traceback_to_the_one_line(tmp_path: Path) -> None:
    result = run_service({"MODEL_PATH": str(tmp_path / "nope.onnx"), "LOG_LEVEL": "debug"})
    assert result.returncode == 1
    critical = [json.loads(line) for line in result.stdout.splitlines() if '"critical"' in line]
    assert len(critical) == 1 and "no model file at" in critical[0]["message"]
    assert critical[0]["exception"].startswith("Traceback (most recent call last)")
    assert "ModelError" in critical[0]["exception"]


def test_debug_log_level_adds_the_traceback_for_a_busy_port_too(model_path: Path, busy_port: int) -> None:
    result = run_service({"MODEL_PATH": str(model_path), "PORT": str(busy_port), "LOG_LEVEL": "DEBUG"})
    assert result.returncode == 1
    critical = [json.loads(line) for line in result.stdout.splitlines() if '"critical"' in line]
    assert len(critical) == 1 and "already in use" in critical[0]["message"]
    assert "Address already in use" in critical[0]["exception"]


def test_a_good_start_logs_the_url_it_listens_on(model_path: Path, tmp_path: Path) -> None:
    srv = start_service(model_path, tmp_path)
    try:
        listening = srv.wait_for_log(lambda e: e.get("message") == "listening")
        assert listening["url"] == srv.url
    finally:
        stop_service(srv)


def test_privileged_port_message_says_to_pick_one_from_1024() -> None:
    message = bind_failure(PermissionError(errno.EACCES, "Permission denied"), "0.0.0.0", 80)
    assert message.startswith("PORT=80 needs root") and "set PORT to 1024 or above" in message


def test_any_other_bind_failure_still_names_host_and_port() -> None:
    message = bind_failure(OSError(errno.EAFNOSUPPORT, "Address family not supported"), "::1", 8000)
    assert "cannot listen on ::1:8000" in message and "set HOST and PORT" in message


def test_connections_accepted_on_the_bound_socket_send_without_nagle_delay() -> None:
    # asyncio sets TCP_NODELAY only on sockets made with proto=IPPROTO_TCP, which bind() does not
    # create: without the option on the listener a response's second write waits ~40 ms for an ACK.
    listener = bind("127.0.0.1", 0)
    listener.listen()
    with listener, socket.create_connection(listener.getsockname()[:2]):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
