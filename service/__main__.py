"""`python -m service`: read settings from the environment once, then serve.

WORKERS=1 serves in this process. More workers: this process becomes their supervisor
(service/supervisor.py) and each worker is `python -m service.worker` on the same socket.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable

from service import logs
from service.app import create_app
from service.config import Settings
from service.connections import ensure_fd_budget
from service.cpus import usable_cpus
from service.listen import bind, reserve_for_workers
from service.serve import run_guarded, serve, url
from service.supervisor import Supervisor

log = logging.getLogger("catsdogs.start")


def main() -> int:
    return run_guarded(_start)


def _start() -> Callable[[], int]:
    settings = Settings.from_env().sized_for(usable_cpus())
    ensure_fd_budget(settings.max_connections)
    logs.configure(settings.log_level)
    if settings.workers > 1:
        return Supervisor(settings, reserve_for_workers(settings.host, settings.port)).start()
    sock = bind(settings.host, settings.port)
    app = create_app(settings)
    asyncio.run(app.state.host.load())  # the lifespan sees it loaded and skips its own load
    log.info("listening", extra={"url": url(sock), "workers": 1, "inference_threads": settings.inference_threads})
    return lambda: serve(app, settings, sock)


if __name__ == "__main__":
    sys.exit(main())
