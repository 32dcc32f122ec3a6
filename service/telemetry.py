"""Per-request observability as one pure ASGI middleware.

Assigns the request id (honouring X-Request-ID), times the request, keeps the
in-flight gauge, counts requests/rejections and writes the one JSON access log
line. Handlers add what they learn (class, image size...) to `request.state.record`.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

access_log = logging.getLogger("catsdogs.access")
# Echoed in a header and a log line: keep it short and printable.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


@dataclass
class RequestRecord:
    request_id: str
    method: str
    route: str = "unmatched"
    status: int = 500
    latency_ms: float = 0.0
    predicted_class: str | None = None
    confidence: float | None = None
    image_bytes: int | None = None
    image_width: int | None = None
    image_height: int | None = None
    image_sha256: str | None = None
    batch_size: int | None = None
    rejection: str | None = None
    error: str | None = None


class TelemetryMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        record = RequestRecord(request_id=request_id, method=scope["method"])
        scope.setdefault("state", {})["record"] = record
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            record.status, record.error = 500, type(exc).__name__
            raise
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - start
            record.route = self._route_template(scope)
            record.latency_ms = round(elapsed * 1000, 3)
            self.metrics.requests.labels(route=record.route, method=record.method, status=str(record.status)).inc()
            self.metrics.request_duration.labels(route=record.route).observe(elapsed)
            if record.rejection:
                self.metrics.rejections.labels(reason=record.rejection).inc()
            # vars(), not dataclasses.asdict(): asdict deep-copies every field on the hot path.
            fields = {key: value for key, value in vars(record).items() if value is not None}
            access_log.info("request", extra=fields)

    def _route_template(self, scope: Scope) -> str:
        """The template, never the raw path: raw paths would explode label cardinality."""
        route = scope.get("route")
        if route is None:
            # Refused before the router ran (a declared body over MAX_UPLOAD_BYTES): match as the router
            # would: the first full match, else the first with only the method wrong.
            first: dict[Match, BaseRoute] = {}
            for candidate in self.routes:
                first.setdefault(candidate.matches(scope)[0], candidate)
            route = first.get(Match.FULL) or first.get(Match.PARTIAL)
        return getattr(route, "path", None) or "unmatched"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1").strip()
    return None
