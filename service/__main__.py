"""`python -m service`: read settings from the environment once, serve with uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from service import logs
from service.app import create_app
from service.config import ConfigError, Settings
from service.connections import ensure_fd_budget

# Kubernetes gives 30 s between SIGTERM and SIGKILL; finish in-flight requests well within it.
GRACEFUL_SHUTDOWN_S = 25


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        ensure_fd_budget(settings.max_connections)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        http=app.state.connections.protocol_factory(),  # httptools plus read deadlines and the connection cap
        timeout_keep_alive=settings.keep_alive_timeout_s,
        log_config=logs.logging_config(settings.log_level),
        access_log=False,  # our JSON line per request replaces it
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
