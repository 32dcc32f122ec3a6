"""Operational endpoints: liveness, readiness, Prometheus metrics, admin reload."""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.errors import error_response
from service.host import ModelHost
from service.model import ModelError


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> JSONResponse:
    host: ModelHost = request.app.state.host
    if not host.ready:
        return error_response(503, "not_ready", "the model is not loaded and warmed up yet; retry shortly")
    return JSONResponse({"status": "ready", "model_version": host.model.metadata.model_version})


async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def admin_reload(request: Request) -> Response:
    """Re-read MODEL_PATH; validate, then swap. 404 unless ADMIN_TOKEN is set, so it can't be probed."""
    token = request.app.state.settings.admin_token
    if token is None:
        return error_response(404, "not_found", "admin endpoints are disabled; set ADMIN_TOKEN to enable them")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return error_response(
            401, "unauthorized", "send 'Authorization: Bearer <ADMIN_TOKEN>'", {"WWW-Authenticate": "Bearer"}
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return error_response(403, "forbidden", "the bearer token does not match ADMIN_TOKEN")
    host: ModelHost = request.app.state.host
    previous = host.model.metadata.model_version
    try:
        model = await host.reload()
    except ModelError as exc:
        return error_response(
            422, "reload_failed", f"{exc}; still serving model_version {host.model.metadata.model_version}"
        )
    return JSONResponse(
        {
            "result": "success",
            "model_version": model.metadata.model_version,
            "previous_version": previous,
            "sha256": model.sha256,
        }
    )
