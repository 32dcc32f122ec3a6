"""The listening socket, bound before uvicorn starts so a bad HOST or a busy PORT is one clear error."""

from __future__ import annotations

import errno
import socket


class ListenError(RuntimeError):
    """HOST:PORT cannot be bound; the message says what to change."""


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to host:port (uvicorn listens on it); raises ListenError naming the fix.

    `reuse_port`: one of several worker sockets on the same port (see `reserve_for_workers`).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn does: a restart may bind while the old process's connections sit in TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Accepted sockets inherit it: without it Nagle holds a response's second write for the
    # client's delayed ACK, about 40 ms per request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except (OSError, TypeError) as exc:  # gaierror is an OSError; a HOST socket cannot encode is a TypeError
        sock.close()
        raise ListenError(bind_failure(exc, host, port)) from exc
    return sock


def reserve_for_workers(host: str, port: int) -> socket.socket:
    """The port for several workers, each listening on its own SO_REUSEPORT socket.

    The kernel then hashes each new connection to one worker's socket, so keep-alive clients that
    connect at once spread over the workers. (One shared, inherited socket gave one worker all 8
    connections of a burst in 7 of 10 tries: asyncio accepts every queued connection on a wake-up.)
    Bound once without SO_REUSEPORT first, so a port another server holds is still an error rather
    than silently shared; the socket returned holds the port (bound, never listening, so it is
    given no connections) for workers that are restarted later.
    """
    probe = bind(host, port)
    port = probe.getsockname()[1]  # the real port when PORT=0
    probe.close()
    return bind(host, port, reuse_port=True)


def bind_failure(exc: Exception, host: str, port: int) -> str:
    """Why host:port could not be bound, and what to set instead."""
    code = getattr(exc, "errno", None)
    if code == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use; stop the process holding it "
            f"(`ss -ltnp 'sport = :{port}'` names it) or set PORT to a free port"
        )
    if code == errno.EACCES:
        return f"PORT={port} needs root (ports below 1024 are privileged); set PORT to 1024 or above, e.g. PORT=8000"
    if code == errno.EADDRNOTAVAIL:
        return f"HOST={host} is not an address of this machine; set HOST=127.0.0.1 (local only) or HOST=0.0.0.0 (all)"
    if isinstance(exc, (socket.gaierror, TypeError)):
        return f"HOST={host!r} is not a host name or address; set HOST=127.0.0.1 (local only) or HOST=0.0.0.0 (all)"
    return f"cannot listen on {host}:{port}: {exc}; set HOST and PORT to an address and free port of this machine"
