"""Open Inference Protocol (KServe V2) REST, so KServe and Triton HTTP clients work unchanged.

https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/
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
from service.errors import ApiError, error_response
from service.host import ModelHost
from service.metadata import INPUT_NAME, OUTPUT_NAME
from service.model import OnnxModel

SERVER_NAME = "catsdogs-service"
SHAPE_HINT = "send inputs=[{{'name':'image','datatype':'FP32','shape':[N,3,{s},{s}],'data':[...]}}]"


async def server_metadata(request: Request) -> JSONResponse:
    return JSONResponse({"name": SERVER_NAME, "version": __version__, "extensions": []})


async def live(request: Request) -> JSONResponse:
    return JSONResponse({"live": True})


async def server_ready(request: Request) -> JSONResponse:
    ready = request.app.state.host.ready
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


def _model_for(request: Request) -> OnnxModel | Response:
    """The live model if the path names it (and its version, when given); else the protocol's 404."""
    name = request.path_params["name"]
    host: ModelHost = request.app.state.host
    expected = request.app.state.settings.model_name
    if name != expected:
        return error_response(404, "model_not_found", f"no model named {name!r}; this server serves {expected!r}")
    if not host.ready:
        return error_response(503, "model_not_ready", "the model is still loading; retry when /v2/health/ready is 200")
    model = host.model
    wanted = request.path_params.get("version")
    if wanted is not None and wanted != model.metadata.model_version:
        return error_response(
            404,
            "version_not_found",
            f"version {wanted!r} is not loaded; the live version is {model.metadata.model_version!r}",
        )
    return model


async def model_metadata(request: Request) -> Response:
    model = _model_for(request)
    if isinstance(model, Response):
        return model
    size = model.image_size
    return JSONResponse(
        {
            "name": request.path_params["name"],
            "versions": [model.metadata.model_version],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 3, size, size]}],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, len(model.classes)]}],
            "parameters": {"classes": list(model.classes), "data_version": model.metadata.data_version},
        }
    )


async def model_ready(request: Request) -> Response:
    model = _model_for(request)
    if isinstance(model, Response):
        return model
    return JSONResponse({"name": request.path_params["name"], "ready": True})


async def infer(request: Request) -> Response:
    model = _model_for(request)
    if isinstance(model, Response):
        return model
    host: ModelHost = request.app.state.host
    max_batch = request.app.state.settings.max_batch_files
    with request.app.state.limiter.slot():
        body = await request.body()

        def work() -> tuple[dict[str, Any], np.ndarray]:
            # Parsing megabytes of JSON numbers is CPU work too: keep it off the event loop.
            payload = _parse(body)
            batch = _input_tensor(payload, model.image_size, max_batch)
            _check_outputs(payload)
            return payload, host.infer(model, batch)

        payload, probs = await host.run(work)
    response: dict[str, Any] = {
        "model_name": request.path_params["name"],
        "model_version": model.metadata.model_version,
        "id": str(payload.get("id") or request.state.record.request_id),
        "outputs": [
            {
                "name": OUTPUT_NAME,
                "shape": list(probs.shape),
                "datatype": "FP32",
                "data": probs.reshape(-1).tolist(),
            }
        ],
    }
    request.state.record.batch_size = int(probs.shape[0])
    return JSONResponse(response)


def _parse(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not JSON ({exc}); send an inference request object") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise ApiError(400, "invalid_request", "the body must be a JSON object with an 'inputs' list")
    return payload


def _input_tensor(payload: dict[str, Any], size: int, max_batch: int) -> np.ndarray:
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
    if "data" not in tensor:
        raise ApiError(400, "missing_data", f"input {INPUT_NAME!r} has no 'data'; {hint}")
    try:
        array = np.asarray(tensor["data"], dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ApiError(400, "invalid_data", f"'data' must hold numbers only, flat or nested ({exc})") from exc
    if array.size != int(np.prod(shape)):
        raise ApiError(
            400, "invalid_shape", f"'data' holds {array.size} values but shape {shape} needs {int(np.prod(shape))}"
        )
    if not np.all(np.isfinite(array)):
        raise ApiError(400, "invalid_data", "'data' contains NaN or infinity; send finite normalised pixel values")
    return np.ascontiguousarray(array.reshape(shape))


def _check_outputs(payload: dict[str, Any]) -> None:
    wanted = payload.get("outputs")
    if wanted is None:
        return
    names = (
        [o.get("name") for o in wanted]
        if isinstance(wanted, list) and all(isinstance(o, dict) for o in wanted)
        else None
    )
    if names is None or any(name != OUTPUT_NAME for name in names):
        raise ApiError(400, "unknown_output", f"requested outputs {names!r}; this model only has {OUTPUT_NAME!r}")


def routes() -> list[Route]:
    versioned = "/v2/models/{name}/versions/{version}"
    return [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", server_ready, methods=["GET"]),
        Route("/v2/models/{name}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route(versioned, model_metadata, methods=["GET"]),
        Route(f"{versioned}/ready", model_ready, methods=["GET"]),
        Route(f"{versioned}/infer", infer, methods=["POST"]),
    ]
