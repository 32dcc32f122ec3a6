"""Slow and idle clients: read deadlines and an open-connection cap, on uvicorn's httptools protocol.

uvicorn (0.54) only times out a connection that sits idle *after* a response. A client that
connects and sends half a request head, or half a body, keeps its connection for ever, and
mid-body it also holds one of the MAX_IN_FLIGHT inference slots. This protocol adds:

- a read deadline: the head must arrive within READ_TIMEOUT_S of the connection opening (or of
  the next request's first byte), and then the body within READ_TIMEOUT_S of the head. Past it
  the client gets a 408 and the connection is closed;
- a cap: past MAX_CONNECTIONS open connections, a new one is answered 503 + Retry-After on its
  first request and closed. Connections admitted earlier keep being served.

Idle keep-alive connections are closed by uvicorn itself after KEEP_ALIVE_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import functools
import json
import resource
from collections.abc import Callable
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.config import ConfigError
from service.errors import ApiError, error_body, render
from service.metrics import Metrics

# File descriptors the process needs besides client connections (model, logs, sockets, threads).
OWN_FDS = 64


class ConnectionGuard:
    """State shared by every connection of one server: the limits and the admitted count."""

    def __init__(self, read_timeout_s: float, max_connections: int, metrics: Metrics) -> None:
        self.read_timeout_s = read_timeout_s
        self.max_connections = max_connections
        self.metrics = metrics
        self.admitted = 0

    def protocol_factory(self) -> Callable[..., asyncio.Protocol]:
        """What uvicorn's `http=` takes: it calls it with config, server_state and app_state."""
        return functools.partial(GuardedHttpToolsProtocol, guard=self)

    def admit(self) -> bool:
        if self.admitted >= self.max_connections:
            self.metrics.connections_closed.labels(reason="over_capacity").inc()
            return False
        self.admitted += 1
        self.metrics.open_connections.set(self.admitted)
        return True

    def release(self) -> None:
        self.admitted -= 1
        self.metrics.open_connections.set(self.admitted)

    async def over_capacity(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app a connection past the cap gets instead of the service."""
        detail = (
            f"the server already has {self.max_connections} open connections; retry after the Retry-After "
            "delay (operators: raise MAX_CONNECTIONS or add replicas)"
        )
        refusal = ApiError(503, "too_many_connections", detail, {"Retry-After": "1", "Connection": "close"})
        await render(scope, refusal)(scope, receive, send)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self.admitted = False
        self.read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.admitted = self.guard.admit()
        if not self.admitted:
            self.app = self.guard.over_capacity  # uvicorn hands every request of this connection to it
        self._arm()  # a connection that never sends a full head is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.admitted:
            self.admitted = False
            self.guard.release()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.read_deadline is None:  # the first request's deadline runs from the connection's start
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        self._arm()  # now for the body; on_message_complete follows at once when there is none

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self) -> None:
        self._disarm()
        self.read_deadline = self.loop.call_later(self.guard.read_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def _timed_out(self) -> None:
        self.read_deadline = None
        if self.transport.is_closing():
            return
        self.guard.metrics.connections_closed.labels(reason="read_timeout").inc()
        # The app (if it is waiting for the body) sees a disconnect; nothing it sends goes out after this.
        # A 408 goes out unless a response is half-written; self.cycle may be the previous request's.
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            detail = (
                f"the request was not received within {self.guard.read_timeout_s:g} s; send the head and the "
                "body without pausing (operators: READ_TIMEOUT_S sets the limit)"
            )
            body = json.dumps(error_body("request_timeout", detail)).encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
        self.transport.close()


def ensure_fd_budget(max_connections: int) -> None:
    """Raise the soft open-files limit to fit MAX_CONNECTIONS, or say which setting to change."""
    needed = max_connections + OWN_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(
            f"MAX_CONNECTIONS={max_connections} needs about {needed} open files but the hard limit is {hard}; "
            f"lower MAX_CONNECTIONS to at most {hard - OWN_FDS} or raise the limit (ulimit -Hn, the container's nofile)"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
