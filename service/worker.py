"""`python -m service.worker`: one of several worker processes, started by service/supervisor.py.

It serves on the socket the supervisor bound and passed down, and loads the model generation the
fleet serves now; its settings come from the same environment, already sized by the supervisor.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Callable

from service import logs
from service.app import create_app
from service.config import Settings
from service.fleet import INDEX_ENV, WorkerRole
from service.serve import run_guarded, serve


def main() -> int:
    return run_guarded(_start, worker=int(os.environ[INDEX_ENV]))


def _start() -> Callable[[], int]:
    settings = Settings.from_env()
    role = WorkerRole.from_env(os.environ, settings.workers)
    logs.configure(settings.log_level, role.index)
    sock = socket.socket(fileno=role.listen_fd)
    app = create_app(settings, role)
    asyncio.run(app.state.host.load())
    if role.restarted:
        app.state.metrics.worker_restarts.inc()
    return lambda: serve(app, settings, sock, role.index)


if __name__ == "__main__":
    sys.exit(main())
