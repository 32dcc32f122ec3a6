"""Ports and HTTP probes for the tests that start real servers on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> int:
    """The status code, or 0 when nothing answers."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def wait_for_200(
    url: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    *,
    within_s: float,
    poll_s: float,
    headers: dict[str, str] | None = None,
) -> None:
    """Until `url` answers 200; fails with the server's log when `proc` exits or `within_s` runs out."""
    deadline = time.monotonic() + within_s
    while http_status(url, headers=headers) != 200:
        assert proc.poll() is None, f"{proc.args[0]} exited {proc.returncode}:\n{log.read_text(errors='replace')}"
        assert time.monotonic() < deadline, f"{url} not 200 in {within_s:.0f} s:\n{log.read_text(errors='replace')}"
        time.sleep(poll_s)
