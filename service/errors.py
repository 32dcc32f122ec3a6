"""One error shape for every failure: {"error": code, "detail": text naming the fix}.

Handlers raise ApiError (or one of its subclasses); `handle` turns it, Starlette's own
404/405/400, a model that is not loaded, a client that went away and any unexpected
exception into an ApiError, and `render` is the one place that builds the response and
notes the rejection reason the telemetry middleware counts. An unexpected exception is a
bug: the client still gets the same shape, as a 500, and the traceback goes to the log,
never into the response.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from service.model import ModelError
from service.preprocessing import ImageError

# Status -> catsdogs_rejections_total{reason}: input or load the service refused.
REJECTION_REASONS = {
    400: "bad_request",
    413: "payload_too_large",
    415: "unsupported_media",
    422: "unprocessable",
    503: "overloaded",
}

# What the API documents, and what refusals of a file name as the fix; Pillow opens a few more.
IMAGE_FORMATS = "JPEG, PNG, GIF, BMP or WebP"

# preprocessing.ImageError.code -> HTTP status
IMAGE_ERROR_STATUS = {
    "empty_file": 400,
    "not_an_image": 415,
    "image_too_large": 422,
    "undecodable": 422,
    "truncated": 422,
}

# The fix a client needs where preprocessing's own words (shared with training) do not name one.
IMAGE_ERROR_FIXES = {"not_an_image": f"send a {IMAGE_FORMATS} image"}


class ApiError(Exception):
    """A refusal of the client's request; its status names its catsdogs_rejections_total reason, if any."""

    def __init__(self, status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})

    @classmethod
    def from_image_error(cls, exc: ImageError) -> ApiError:
        fix = IMAGE_ERROR_FIXES.get(exc.code)
        return cls(IMAGE_ERROR_STATUS.get(exc.code, 422), exc.code, f"{exc.detail}; {fix}" if fix else exc.detail)

    @property
    def rejection(self) -> str | None:
        """The catsdogs_rejections_total reason, or None when this is not a refusal of input or load."""
        return REJECTION_REASONS.get(self.status)


class ServerStateError(ApiError):
    """Refused because of the server's own state (no model loaded yet, a reload that failed),
    not the client's input or load: rendered like any refusal, never counted as a rejection,
    so a 503 while starting up does not read as overload."""

    @property
    def rejection(self) -> str | None:
        return None


def error_body(code: str, detail: str) -> dict[str, str]:
    return {"error": code, "detail": detail}


def render(scope: Scope, exc: ApiError) -> JSONResponse:
    """The one renderer: the JSON error response, and the rejection noted on the request's record."""
    record = scope.get("state", {}).get("record")
    if record is not None and exc.rejection is not None:
        record.rejection = exc.rejection
    return JSONResponse(error_body(exc.code, exc.detail), status_code=exc.status, headers=exc.headers)


async def handle(request: Request, exc: Exception) -> Response:
    """The app's exception handler for every exception type it registers."""
    return render(request.scope, as_api_error(request, exc))


_HTTP_CODES = {
    400: ("bad_request", "the request could not be parsed; check the multipart encoding"),
    404: ("not_found", "no such endpoint; see GET /docs for the list"),
    405: ("method_not_allowed", "this endpoint does not accept that method; see GET /docs"),
}


def as_api_error(request: Request, exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, HTTPException):
        code, hint = _HTTP_CODES.get(exc.status_code, ("http_error", "see GET /docs"))
        phrase = HTTPStatus(exc.status_code).phrase
        detail = hint if exc.detail in (None, "", phrase) else f"{exc.detail}; {hint}"
        return ApiError(exc.status_code, code, detail, exc.headers)
    if isinstance(exc, ModelError):  # host.model before the first load has finished
        return ServerStateError(503, "not_ready", f"{exc}; retry when GET /ready is 200")
    if isinstance(exc, ClientDisconnect):
        # The client went away mid-body, or was cut off by READ_TIMEOUT_S (service/connections.py).
        # Nobody reads this reply; it is there so the request is logged and counted as nginx's 499
        # "client closed request", not as a server error.
        return ApiError(499, "client_closed_request", "the connection closed before the request body arrived")
    # Last resort for an unexpected exception. Starlette re-raises it afterwards, so the
    # server logs the traceback (as JSON) and the request's telemetry records the 500.
    record = getattr(request.state, "record", None)
    request_id = record.request_id if record is not None else "unknown"
    return ApiError(
        500,
        "internal_error",
        f"the service hit an unexpected internal error; retry, and if it persists give the operators "
        f"request id {request_id} (the server log has the traceback)",
        {"X-Request-ID": request_id} if record is not None else None,
    )
