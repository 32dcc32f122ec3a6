"""Operational endpoints: liveness, readiness, Prometheus metrics, admin reload."""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.config import Settings
from service.errors import ApiError, ServerStateError
from service.host import ModelHost
from service.metrics import Metrics
from service.model import ModelError


class OpsEndpoints:
    def __init__(self, host: ModelHost, settings: Settings, metrics: Metrics) -> None:
        self.host = host
        self.admin_token = settings.admin_token
        self.metrics_registry = metrics.registry

    def routes(self) -> list[Route]:
        return [
            Route("/health", self.health, methods=["GET"]),
            Route("/ready", self.ready, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/admin/reload", self.admin_reload, methods=["POST"]),
        ]

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> JSONResponse:
        if not self.host.ready:
            raise ServerStateError(503, "not_ready", "the model is not loaded and warmed up yet; retry shortly")
        return JSONResponse({"status": "ready", "model_version": self.host.model.metadata.model_version})

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics_registry), media_type=CONTENT_TYPE_LATEST)

    async def admin_reload(self, request: Request) -> JSONResponse:
        """Re-read MODEL_PATH; validate, then swap. 404 unless ADMIN_TOKEN is set, so it can't be probed."""
        self._authorise(request)
        previous = self.host.model.metadata.model_version
        try:
            model = await self.host.reload()
        except ModelError as exc:
            live = self.host.model.metadata.model_version
            raise ServerStateError(422, "reload_failed", f"{exc}; still serving model_version {live}") from exc
        return JSONResponse(
            {
                "result": "success",
                "model_version": model.metadata.model_version,
                "previous_version": previous,
                "sha256": model.sha256,
            }
        )

    def _authorise(self, request: Request) -> None:
        if self.admin_token is None:
            raise ApiError(404, "not_found", "admin endpoints are disabled; set ADMIN_TOKEN to enable them")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(
                401, "unauthorized", "send 'Authorization: Bearer <ADMIN_TOKEN>'", {"WWW-Authenticate": "Bearer"}
            )
        if not hmac.compare_digest(given.strip().encode(), self.admin_token.encode()):
            raise ApiError(403, "forbidden", "the bearer token does not match ADMIN_TOKEN")
