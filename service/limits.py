"""Back-pressure: a byte cap on request bodies and a cap on concurrent inference requests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ApiError, render


class PayloadTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            "payload_too_large",
            f"the request body exceeds the limit of {readable_size(limit)}; send a smaller image "
            "(or raise MAX_UPLOAD_BYTES on the server)",
            headers={"Connection": "close"},
        )


def readable_size(size: int) -> str:
    """A byte count as people read one: 10485760 -> '10 MiB', 1536 -> '1.5 KiB', 1000 -> '1000 bytes'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{size} bytes"


class UploadLimitMiddleware:
    """Refuses bodies over `limit` bytes without ever holding more than that.

    A declared Content-Length over the limit is answered before reading a byte;
    a chunked (or lying) body is counted as it streams and reading stops with
    PayloadTooLarge, which the app's ApiError handler turns into a 413.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            # Answered here, before the app's exception handlers, so that not one byte of the body is read.
            await render(scope, PayloadTooLarge(self.limit))(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise PayloadTooLarge(self.limit)
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class InFlightLimiter:
    """Admits at most `limit` requests at once; the next one gets 503 + Retry-After at once.

    Runs on the event loop only, so a plain counter is race-free.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.active >= self.limit:
            raise ApiError(
                503,
                "overloaded",
                f"the server is already handling {self.limit} inference requests; retry after the "
                "Retry-After delay (operators: raise MAX_IN_FLIGHT or add replicas)",
                headers={"Retry-After": "1"},
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
