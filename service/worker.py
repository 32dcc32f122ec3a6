"""`python -m service.worker`: one of several worker processes, started by service/supervisor.py.

It listens on its own SO_REUSEPORT socket on the port the supervisor reserved, and loads the model
generation the fleet serves now; its settings come from the same environment, already sized (and
PORT resolved) by the supervisor.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable

from service import logs
from service.app import create_app
from service.config import Settings
from service.fleet import INDEX_ENV, WorkerRole
from service.listen import bind
from service.serve import run_guarded, serve


def main() -> int:
    return run_guarded(_start, worker=int(os.environ[INDEX_ENV]))


def _start() -> Callable[[], int]:
    # A reload the supervisor forwards before the app installs its SIGHUP handler must not kill us.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    settings = Settings.from_env()
    role = WorkerRole.from_env(os.environ, settings.workers)
    logs.configure(settings.log_level, role.index)
    sock = bind(settings.host, settings.port, reuse_port=True)
    app = create_app(settings, role)
    if role.restarted:  # counted as it starts, so a replacement that cannot load still counts
        app.state.host.metrics.worker_restarts.inc()
    asyncio.run(app.state.host.load())
    return lambda: serve(app, settings, sock, role.index)


if __name__ == "__main__":
    sys.exit(main())
