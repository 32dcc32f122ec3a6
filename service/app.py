"""Wiring: routes, middleware, error handlers, and the lifespan that loads the model.

`uvicorn --factory service.app:create_app` works; nothing is loaded at import time.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from service import docs, ops, predict, v2
from service.config import Settings
from service.connections import ConnectionGuard
from service.errors import (
    ApiError,
    api_error_handler,
    client_disconnect_handler,
    error_response,
    http_error_handler,
    internal_error_handler,
)
from service.fleet import WorkerRole
from service.host import ModelHost
from service.limits import InFlightLimiter, UploadLimitMiddleware
from service.metrics import Metrics
from service.model import ModelError
from service.telemetry import TelemetryMiddleware

log = logging.getLogger("catsdogs.app")


async def _model_error_handler(request: Request, exc: Exception) -> Response:
    return error_response(503, "not_ready", f"{exc}; retry when GET /ready is 200")


def create_app(settings: Settings | None = None, role: WorkerRole | None = None) -> Starlette:
    """One process's app; `role` when it is one of several worker processes (service/supervisor.py)."""
    settings = settings or Settings.from_env()
    metrics = Metrics(multiprocess=role is not None)
    host = ModelHost(settings, metrics, role)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not host.loaded:  # `python -m service` loads it before uvicorn; `uvicorn --factory` gets here first
            try:
                await host.load()
            except ModelError as exc:
                log.critical("cannot start: %s", exc)  # one clear line before uvicorn's generic failure
                raise
        restore = _install_sighup(host)
        following = asyncio.create_task(host.follow())  # other workers' reloads; returns at once when alone
        try:
            yield
        finally:
            following.cancel()
            restore()
            host.close()

    routes = [
        Route("/predict", predict.predict, methods=["POST"]),
        Route("/predict/batch", predict.predict_batch, methods=["POST"]),
        Route("/model", predict.model_info, methods=["GET"]),
        Route("/health", ops.health, methods=["GET"]),
        Route("/ready", ops.ready, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        Route("/admin/reload", ops.admin_reload, methods=["POST"]),
        Route("/openapi.json", docs.openapi, methods=["GET"]),
        Route("/docs", docs.swagger_ui, methods=["GET"]),
        Mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="swagger-static"),
        *v2.routes(),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            # Telemetry outermost so it sees (and logs) every response, 413s included.
            Middleware(TelemetryMiddleware, metrics=metrics),
            Middleware(UploadLimitMiddleware, limit=settings.max_upload_bytes),
        ],
        exception_handlers={
            ApiError: api_error_handler,
            HTTPException: http_error_handler,
            ModelError: _model_error_handler,
            ClientDisconnect: client_disconnect_handler,
            Exception: internal_error_handler,  # Starlette runs this one outermost, for anything unhandled
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.host = host
    app.state.limiter = InFlightLimiter(settings.max_in_flight)
    # Per connection, below the app: `python -m service` hands its protocol factory to uvicorn.
    app.state.connections = ConnectionGuard(settings.read_timeout_s, settings.max_connections, metrics)
    app.state.openapi = docs.openapi_spec(settings)
    return app


def _install_sighup(host: ModelHost) -> Callable[[], None]:
    """SIGHUP -> reload MODEL_PATH. uvicorn only claims SIGINT/SIGTERM, so HUP is ours."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[object]] = set()

    def reload_quietly() -> None:
        async def run() -> None:
            try:
                await host.reload()
            except ModelError:
                pass  # host.reload already logged it and counted the failure; the old model serves on

        task = loop.create_task(run())
        tasks.add(task)  # keep a reference until done, or the task may be garbage-collected
        task.add_done_callback(tasks.discard)

    def on_hup(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(reload_quietly)

    try:
        previous = signal.signal(signal.SIGHUP, on_hup)
    except ValueError:  # not the main thread (e.g. TestClient): no signals there
        log.debug("SIGHUP reload not installed: not running in the main thread")
        return lambda: None
    return lambda: signal.signal(signal.SIGHUP, previous)
