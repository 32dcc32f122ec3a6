"""Start-up and serving shared by `python -m service` and each worker process.

Everything that can stop start-up (settings, the open-files limit, HOST:PORT, the model) runs
before uvicorn does, so each failure is one JSON `critical` line that names the fix and a non-zero
exit; the traceback is added only at LOG_LEVEL=DEBUG.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette

from service import logs
from service.config import ConfigError, Settings
from service.listen import ListenError
from service.model import ModelError

# Kubernetes gives 30 s between SIGTERM and SIGKILL; finish in-flight requests well within it.
GRACEFUL_SHUTDOWN_S = 25
EXIT_BAD_SETTING = 2  # an environment variable holds a value the service cannot use
EXIT_CANNOT_SERVE = 1  # the settings are valid, but the port or the model cannot be used

log = logging.getLogger("catsdogs.start")


def run_guarded(start: Callable[[], Callable[[], int]], worker: int | None = None) -> int:
    """Run `start` (everything that may fail before serving), then what it returns (the serving)."""
    # Before the settings are read, so even a bad setting is reported as a JSON line.
    debug = os.environ.get("LOG_LEVEL", "").strip().upper() == "DEBUG"
    logs.configure("DEBUG" if debug else "INFO", worker)
    try:
        serve = start()
    except ConfigError as exc:
        return cannot_start(str(exc), EXIT_BAD_SETTING, debug)
    except (ListenError, ModelError) as exc:
        return cannot_start(str(exc), EXIT_CANNOT_SERVE, debug)
    except Exception as exc:  # noqa: BLE001 - a bug, not a setting: still one line, the traceback at DEBUG
        reason = f"unexpected {type(exc).__name__}: {exc}; report it with the traceback that LOG_LEVEL=DEBUG adds"
        return cannot_start(reason, EXIT_CANNOT_SERVE, debug)
    return serve()


def cannot_start(reason: str, code: int, debug: bool) -> int:
    log.critical("cannot start: %s", reason, exc_info=debug)
    return code


def serve(app: Starlette, settings: Settings, sock: socket.socket, worker: int | None = None) -> int:
    """Serve `app` on the bound socket until SIGTERM/SIGINT, then drain for up to GRACEFUL_SHUTDOWN_S."""
    config = uvicorn.Config(
        app,
        http=app.state.connections.protocol_factory(),  # httptools plus read deadlines and the connection cap
        timeout_keep_alive=settings.keep_alive_timeout_s,
        log_config=logs.logging_config(settings.log_level, worker),
        access_log=False,  # our JSON line per request replaces it
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]  # the real port when PORT=0
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"
