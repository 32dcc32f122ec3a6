"""The in-process service: its settings, and its upload-limit middleware driven at the ASGI level."""

from __future__ import annotations

from pathlib import Path

from service.config import Settings
from service.limits import PayloadTooLarge, UploadLimitMiddleware


def make_settings(model_path: Path, **overrides: object) -> Settings:
    return Settings(model_path=model_path, **overrides)  # type: ignore[arg-type]


async def run_limited(chunks: list[bytes], limit: int, headers: list[tuple[bytes, bytes]]) -> tuple[list, int]:  # type: ignore[type-arg]
    """Drive the middleware with a streaming body; the app reads until the body ends."""
    pulled = 0
    sent: list = []  # type: ignore[type-arg]

    async def receive():  # type: ignore[no-untyped-def]
        nonlocal pulled
        pulled += 1
        body = chunks[pulled - 1]
        return {"type": "http.request", "body": body, "more_body": pulled < len(chunks)}

    async def send(message):  # type: ignore[no-untyped-def]
        sent.append(message)

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})

    scope = {"type": "http", "headers": headers, "method": "POST"}
    try:
        await UploadLimitMiddleware(app, limit)(scope, receive, send)
    except PayloadTooLarge:
        sent.append("raised 413")
    return sent, pulled
