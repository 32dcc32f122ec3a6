"""Open Inference Protocol (KServe V2) REST, so KServe and Triton HTTP clients work unchanged.

https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/
Tensors travel as JSON or, with Triton's binary tensor extension (what `tritonclient.http`
sends by default), as raw little-endian bytes after a JSON header whose length is in the
Inference-Header-Content-Length header.
Errors keep the protocol's {"error": ...} key (plus our "detail").
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import __version__
from service.config import Settings
from service.errors import ApiError, ServerStateError
from service.host import ModelHost
from service.limits import InFlightLimiter
from service.metadata import INPUT_NAME, OUTPUT_NAME
from service.model import OnnxModel

SERVER_NAME = "catsdogs-service"
BINARY_HEADER = "Inference-Header-Content-Length"
SHAPE_HINT = "send inputs=[{{'name':'image','datatype':'FP32','shape':[N,3,{s},{s}],'data':[...]}}]"


class V2Endpoints:
    """The protocol's handlers, built once with the host, the in-flight limiter and the settings."""

    def __init__(self, host: ModelHost, limiter: InFlightLimiter, settings: Settings) -> None:
        self.host = host
        self.limiter = limiter
        self.model_name = settings.model_name
        self.max_batch = settings.max_batch_files

    def routes(self) -> list[Route]:
        versioned = "/v2/models/{name}/versions/{version}"
        return [
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.server_ready, methods=["GET"]),
            Route("/v2/models/{name}", self.model_metadata, methods=["GET"]),
            Route("/v2/models/{name}/ready", self.model_ready, methods=["GET"]),
            Route("/v2/models/{name}/infer", self.infer, methods=["POST"]),
            Route(versioned, self.model_metadata, methods=["GET"]),
            Route(f"{versioned}/ready", self.model_ready, methods=["GET"]),
            Route(f"{versioned}/infer", self.infer, methods=["POST"]),
        ]

    async def server_metadata(self, request: Request) -> JSONResponse:
        return JSONResponse({"name": SERVER_NAME, "version": __version__, "extensions": ["binary_tensor_data"]})

    async def live(self, request: Request) -> JSONResponse:
        return JSONResponse({"live": True})

    async def server_ready(self, request: Request) -> JSONResponse:
        # The protocol's boolean answer, not a refusal: its status code carries the result.
        ready = self.host.ready
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def model_metadata(self, request: Request) -> JSONResponse:
        model = self._model_for(request)
        size = model.image_size
        return JSONResponse(
            {
                "name": self.model_name,
                "versions": [model.metadata.model_version],
                "platform": "onnxruntime_onnx",
                "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 3, size, size]}],
                "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, len(model.classes)]}],
                "parameters": {"classes": list(model.classes), "data_version": model.metadata.data_version},
            }
        )

    async def model_ready(self, request: Request) -> JSONResponse:
        self._model_for(request)
        return JSONResponse({"name": self.model_name, "ready": True})

    async def infer(self, request: Request) -> Response:
        model = self._model_for(request)
        host, max_batch = self.host, self.max_batch
        encoding = request.headers.get("content-encoding", "identity").lower()
        if encoding != "identity":
            raise ApiError(
                415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not accepted; send it uncompressed"
            )
        with self.limiter.slot():
            header, binary = _split_body(await request.body(), request.headers.get(BINARY_HEADER))

            def work() -> tuple[dict[str, Any], np.ndarray, bool]:
                # Parsing megabytes of JSON numbers is CPU work too: keep it off the event loop.
                payload = _parse(header)
                batch = _input_tensor(payload, binary, model.image_size, max_batch)
                binary_out = _binary_output(payload)  # validates the requested outputs before any inference
                return payload, host.infer(model, batch), binary_out

            payload, probs, binary_out = await host.run(work)
        request.state.record.batch_size = int(probs.shape[0])
        output: dict[str, Any] = {"name": OUTPUT_NAME, "shape": list(probs.shape), "datatype": "FP32"}
        response: dict[str, Any] = {
            "model_name": self.model_name,
            "model_version": model.metadata.model_version,
            "id": str(payload.get("id") or request.state.record.request_id),
            "outputs": [output],
        }
        if not binary_out:
            output["data"] = probs.reshape(-1).tolist()
            return JSONResponse(response)
        raw = probs.astype("<f4").tobytes()
        output["parameters"] = {"binary_data_size": len(raw)}
        head = json.dumps(response).encode()
        return Response(head + raw, media_type="application/octet-stream", headers={BINARY_HEADER: str(len(head))})

    def _model_for(self, request: Request) -> OnnxModel:
        """The live model if the path names it (and its version, when given); else raise the protocol's 404."""
        name = request.path_params["name"]
        if name != self.model_name:
            raise ApiError(404, "model_not_found", f"no model named {name!r}; this server serves {self.model_name!r}")
        if not self.host.ready:
            raise ServerStateError(
                503, "model_not_ready", "the model is still loading; retry when /v2/health/ready is 200"
            )
        model = self.host.model
        wanted = request.path_params.get("version")
        if wanted is not None and wanted != model.metadata.model_version:
            raise ApiError(
                404,
                "version_not_found",
                f"version {wanted!r} is not loaded; the live version is {model.metadata.model_version!r}",
            )
        return model


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail). Without the header the whole body is JSON."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 < length <= len(body):
        raise ApiError(
            400,
            "invalid_header",
            f"{BINARY_HEADER} is {header_length!r} but the body has {len(body)} bytes; "
            "it must give the length of the JSON part that starts the body",
        )
    return body[:length], body[length:]


def _parse(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not JSON ({exc}); send an inference request object") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise ApiError(400, "invalid_request", "the body must be a JSON object with an 'inputs' list")
    return payload


def _input_tensor(payload: dict[str, Any], binary: bytes, size: int, max_batch: int) -> np.ndarray:
    hint = SHAPE_HINT.format(s=size)
    inputs = payload["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ApiError(400, "invalid_inputs", f"expected exactly one input tensor, got {len(inputs)}; {hint}")
    tensor = inputs[0]
    if tensor.get("name") != INPUT_NAME:
        raise ApiError(400, "unknown_input", f"unknown input {tensor.get('name')!r}; {hint}")
    if tensor.get("datatype") != "FP32":
        raise ApiError(400, "invalid_datatype", f"datatype {tensor.get('datatype')!r} is not supported; {hint}")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 4
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or shape[1:] != [3, size, size]
        or not 1 <= shape[0] <= max_batch
    ):
        raise ApiError(
            400, "invalid_shape", f"shape {shape!r} is not [N,3,{size},{size}] with 1 <= N <= {max_batch}; {hint}"
        )
    count = int(np.prod(shape))
    declared = _parameters(tensor).get("binary_data_size")
    if declared is not None:
        array = _binary_data(declared, binary, count)
    elif binary:
        raise ApiError(400, "invalid_binary", f"{len(binary)} bytes follow the JSON but no input declares them")
    else:
        array = _json_data(tensor, hint)
    if array.size != count:
        raise ApiError(400, "invalid_shape", f"'data' holds {array.size} values but shape {shape} needs {count}")
    flat = array.reshape(-1)  # nested JSON data arrives N-dimensional
    bad = np.flatnonzero(~np.isfinite(flat))
    if bad.size:
        # A NaN would come back as NaN probabilities and an arbitrary argmax: refuse it instead.
        raise ApiError(
            400,
            "invalid_data",
            f"'data' holds {bad.size} non-finite values (value #{bad[0]} is {flat[bad[0]]}); NaN, infinity and "
            "numbers beyond the FP32 range are not pixels: send finite normalised pixel values",
        )
    return np.ascontiguousarray(array.reshape(shape))


def _json_data(tensor: dict[str, Any], hint: str) -> np.ndarray:
    if "data" not in tensor:
        raise ApiError(400, "missing_data", f"input {INPUT_NAME!r} has no 'data'; {hint}")
    try:
        with np.errstate(over="ignore"):  # 1e39 overflows FP32 to inf, which the finiteness check then names
            return np.asarray(tensor["data"], dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ApiError(400, "invalid_data", f"'data' must hold numbers only, flat or nested ({exc})") from exc


def _binary_data(declared: object, binary: bytes, count: int) -> np.ndarray:
    want = count * 4  # FP32
    if declared != want or len(binary) != want:
        raise ApiError(
            400,
            "invalid_binary",
            f"binary_data_size is {declared!r} and {len(binary)} bytes follow the JSON, but the shape "
            f"needs exactly {want} bytes of little-endian float32",
        )
    return np.frombuffer(binary, dtype="<f4")


def _parameters(item: dict[str, Any]) -> dict[str, Any]:
    parameters = item.get("parameters")
    return parameters if isinstance(parameters, dict) else {}


def _binary_output(payload: dict[str, Any]) -> bool:
    """Whether the client asked for the output as raw bytes; an output's own flag beats the request's."""
    binary = _parameters(payload).get("binary_data_output") is True
    wanted = payload.get("outputs")
    if wanted is None:
        return binary
    names = (
        [o.get("name") for o in wanted]
        if isinstance(wanted, list) and all(isinstance(o, dict) for o in wanted)
        else None
    )
    if names is None or any(name != OUTPUT_NAME for name in names):
        raise ApiError(400, "unknown_output", f"requested outputs {names!r}; this model only has {OUTPUT_NAME!r}")
    for requested in wanted:
        parameters = _parameters(requested)
        if parameters.get("class_count"):
            raise ApiError(
                400,
                "unsupported_parameter",
                "the classification extension (class_count) is not supported; "
                f"read the class names from GET /v2/models/{{name}} and take the argmax of {OUTPUT_NAME!r}",
            )
        if "binary_data" in parameters:
            binary = parameters["binary_data"] is True
    return binary
