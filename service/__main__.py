"""`python -m service`: read settings from the environment once, serve with uvicorn.

Everything that can stop start-up (settings, the open-files limit, HOST:PORT, the model) is
done before uvicorn runs, so each failure is one JSON `critical` line that names the fix and a
non-zero exit; the traceback is added only at LOG_LEVEL=DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import uvicorn

from service import logs
from service.app import create_app
from service.config import ConfigError, Settings
from service.connections import ensure_fd_budget
from service.listen import ListenError, bind
from service.model import ModelError

# Kubernetes gives 30 s between SIGTERM and SIGKILL; finish in-flight requests well within it.
GRACEFUL_SHUTDOWN_S = 25
EXIT_BAD_SETTING = 2  # an environment variable holds a value the service cannot use
EXIT_CANNOT_SERVE = 1  # the settings are valid, but the port or the model cannot be used

log = logging.getLogger("catsdogs.start")


def main() -> int:
    # Before the settings are read, so even a bad setting is reported as a JSON line.
    debug = os.environ.get("LOG_LEVEL", "").strip().upper() == "DEBUG"
    logs.configure("DEBUG" if debug else "INFO")
    try:
        settings = Settings.from_env()
        ensure_fd_budget(settings.max_connections)
        logs.configure(settings.log_level)
        sock = bind(settings.host, settings.port)
        app = create_app(settings)
        asyncio.run(app.state.host.load())  # the lifespan sees it loaded and skips its own load
    except ConfigError as exc:
        return _cannot_start(str(exc), EXIT_BAD_SETTING, debug)
    except (ListenError, ModelError) as exc:
        return _cannot_start(str(exc), EXIT_CANNOT_SERVE, debug)
    except Exception as exc:  # noqa: BLE001 - a bug, not a setting: still one line, the traceback at DEBUG
        reason = f"unexpected {type(exc).__name__}: {exc}; report it with the traceback that LOG_LEVEL=DEBUG adds"
        return _cannot_start(reason, EXIT_CANNOT_SERVE, debug)
    config = uvicorn.Config(
        app,
        http=app.state.connections.protocol_factory(),  # httptools plus read deadlines and the connection cap
        timeout_keep_alive=settings.keep_alive_timeout_s,
        log_config=logs.logging_config(settings.log_level),
        access_log=False,  # our JSON line per request replaces it
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
    )
    host, port = sock.getsockname()[:2]  # the real port when PORT=0
    log.info("listening", extra={"url": f"http://{f'[{host}]' if ':' in host else host}:{port}"})
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _cannot_start(reason: str, code: int, debug: bool) -> int:
    log.critical("cannot start: %s", reason, exc_info=debug)
    return code


if __name__ == "__main__":
    sys.exit(main())
