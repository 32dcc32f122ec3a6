"""Tiny stdlib HTTP helpers shared by smoke_test.py and post_deploy_monitor.py.

Stdlib only, so the CLIs run on any host with Python 3.9+ (a CI runner, a
bastion, a laptop) without installing anything.
"""

from __future__ import annotations

import json
import mimetypes
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Response:
    status: int  # 0 when no HTTP answer came back (connection refused, timeout...)
    body: bytes
    elapsed_ms: float
    error: str | None = None

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


def request(
    method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> Response:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = resp.read()
            return Response(resp.status, data, (time.perf_counter() - start) * 1000)
    except urllib.error.HTTPError as exc:
        data = exc.read() if exc.fp is not None else b""
        return Response(exc.code, data, (time.perf_counter() - start) * 1000)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Response(0, b"", (time.perf_counter() - start) * 1000, error=f"{type(exc).__name__}: {reason}")


def multipart(field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    """Encode one file as multipart/form-data; returns (body, content-type header)."""
    boundary = f"----catsdogs{uuid.uuid4().hex}"
    ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        f"Content-Type: {ctype}\r\n\r\n"
    ).encode()
    return head + content + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def predict(base_url: str, image: Path, *, timeout: float = 10.0) -> Response:
    body, ctype = multipart("file", image.name, image.read_bytes())
    return request("POST", f"{base_url}/predict", body=body, headers={"Content-Type": ctype}, timeout=timeout)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n*q/100), at least 1
    return ordered[int(rank) - 1]


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--url must start with http:// or https://, got {url!r}")
    return url
