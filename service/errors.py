"""One error shape for every failure: {"error": code, "detail": text naming the fix}.

Handlers raise ApiError; the exception handlers here turn it (and Starlette's
own 404/405/400) into that JSON body and note a rejection reason for metrics.
Anything else that escapes a handler is a bug: the client still gets the same
shape, as a 500, and the traceback goes to the log, never into the response.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.preprocessing import ImageError

# Status -> catsdogs_rejections_total{reason}: input or load the service refused.
REJECTION_REASONS = {
    400: "bad_request",
    413: "payload_too_large",
    415: "unsupported_media",
    422: "unprocessable",
    503: "overloaded",
}

# preprocessing.ImageError.code -> HTTP status
IMAGE_ERROR_STATUS = {
    "empty_file": 400,
    "not_an_image": 415,
    "image_too_large": 422,
    "undecodable": 422,
    "truncated": 422,
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})

    @classmethod
    def from_image_error(cls, exc: ImageError) -> ApiError:
        return cls(IMAGE_ERROR_STATUS.get(exc.code, 422), exc.code, exc.detail)


def error_body(code: str, detail: str) -> dict[str, str]:
    return {"error": code, "detail": detail}


def error_response(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, detail), status_code=status, headers=dict(headers or {}))


def mark_rejection(request: Request, status: int) -> None:
    reason = REJECTION_REASONS.get(status)
    record = getattr(request.state, "record", None)
    if reason is not None and record is not None:
        record.rejection = reason


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    mark_rejection(request, exc.status)
    return error_response(exc.status, exc.code, exc.detail, exc.headers)


_HTTP_CODES = {
    400: ("bad_request", "the request could not be parsed; check the multipart encoding"),
    404: ("not_found", "no such endpoint; see GET /docs for the list"),
    405: ("method_not_allowed", "this endpoint does not accept that method; see GET /docs"),
}


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code, hint = _HTTP_CODES.get(exc.status_code, ("http_error", "see GET /docs"))
    detail = hint if exc.detail in (None, "", HTTPStatus(exc.status_code).phrase) else f"{exc.detail}; {hint}"
    mark_rejection(request, exc.status_code)
    return error_response(exc.status_code, code, detail, exc.headers)


async def client_disconnect_handler(request: Request, exc: Exception) -> Response:
    """The client went away mid-body, or was cut off by READ_TIMEOUT_S (service/connections.py).
    Nobody reads this reply; it is there so the request is logged and counted as nginx's 499
    "client closed request", not as a server error."""
    return error_response(499, "client_closed_request", "the connection closed before the request body arrived")


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    """Last resort for an unexpected exception. Starlette re-raises it afterwards, so the
    server logs the traceback (as JSON) and the request's telemetry records the 500."""
    record = getattr(request.state, "record", None)
    request_id = record.request_id if record is not None else "unknown"
    return error_response(
        500,
        "internal_error",
        f"the service hit an unexpected internal error; retry, and if it persists give the operators "
        f"request id {request_id} (the server log has the traceback)",
        {"X-Request-ID": request_id} if record is not None else None,
    )
