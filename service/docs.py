"""GET /openapi.json (hand-written OpenAPI 3.0.3) and GET /docs (Swagger UI from the
swagger-ui-bundle wheel's own files, mounted at /docs/static: works offline).

3.0.3, not 3.1: the bundled Swagger UI (4.15) renders only 2.0 and 3.0.x, and this one
document is what /docs shows, what tests/service/test_api_fuzz.py fuzzes the real server
against, and what test_contract.py validates against the 3.0 meta-schema. The limits it
states (batch size, model name) come from the running server's settings.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from service import __version__
from service.config import Settings
from service.errors import IMAGE_FORMATS
from service.metadata import INPUT_NAME, OUTPUT_NAME


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR_TEXT = {
    400: "Bad request: empty upload, missing or non-file field, malformed body or tensor",
    401: "Missing bearer token",
    403: "Wrong bearer token",
    404: "Unknown model name/version, or admin disabled (no ADMIN_TOKEN)",
    413: "Body over MAX_UPLOAD_BYTES, or more than MAX_BATCH_FILES files",
    415: "Not an image / unsupported Content-Type or Content-Encoding",
    422: "Image could not be decoded (truncated, too many pixels), or the reload was refused",
    # Every operation can get this one: the open-connection cap answers before routing.
    503: "Not ready, over MAX_IN_FLIGHT, or over MAX_CONNECTIONS (see Retry-After)",
}


def _responses(ok: dict[str, Any], *errors: int) -> dict[str, Any]:
    return {"200": ok, **{str(s): _json(_ref("Error"), _ERROR_TEXT[s]) for s in (*errors, 503)}}


def _binary(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "binary", "minLength": 1, "description": description}


def _image_body() -> dict[str, Any]:
    image = _binary(f"a {IMAGE_FORMATS} image")
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"], "properties": {"file": image}},
            },
            "image/*": {"schema": image},
            "application/octet-stream": {"schema": image},
        },
    }


def _batch_body(max_files: int) -> dict[str, Any]:
    files = {
        "type": "array",
        "minItems": 1,
        "maxItems": max_files,
        "items": {"type": "string", "format": "binary", "description": f"a {IMAGE_FORMATS} image"},
        "description": "repeat the field once per image: curl -F file=@a.jpg -F file=@b.jpg",
    }
    return {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {"file": files}}}
        },
    }


_STRING = {"type": "string"}
_NUMBER = {"type": "number"}
_PROBABILITIES = {"type": "object", "additionalProperties": _NUMBER, "example": {"cat": 0.97, "dog": 0.03}}
_INFER_DATA = {
    "type": "array",
    "items": _NUMBER,
    "description": "N*3*S*S float32 values, flat row-major (nested lists are accepted too), "
    "normalised as GET /model's preprocessing says",
}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _schemas() -> dict[str, Any]:
    tensor_meta = _object(
        ["name", "datatype", "shape"],
        name=_STRING,
        datatype=_STRING,
        shape={"type": "array", "items": {"type": "integer"}},
    )
    return {
        "Error": _object(["error", "detail"], error=_STRING, detail=_STRING),
        "Prediction": _object(
            ["predicted_class", "confidence", "probabilities", "model_version", "request_id", "latency_ms"],
            predicted_class={"type": "string", "example": "cat"},
            confidence={"type": "number", "minimum": 0, "maximum": 1, "example": 0.97},
            probabilities=_PROBABILITIES,
            model_version=_STRING,
            request_id=_STRING,
            latency_ms=_NUMBER,
        ),
        "BatchItem": {
            **_object(
                ["filename", "status"],
                filename={"type": "string", "nullable": True},
                status={"type": "integer", "description": "200, or the status this file alone would have got"},
                predicted_class=_STRING,
                confidence=_NUMBER,
                probabilities=_PROBABILITIES,
                image_sha256=_STRING,
                error=_STRING,
                detail=_STRING,
            ),
            "description": "A prediction (status 200) or an error entry for a file that could not be used.",
        },
        "BatchResult": _object(
            ["results", "model_version", "request_id", "latency_ms"],
            results={"type": "array", "items": _ref("BatchItem")},
            model_version=_STRING,
            request_id=_STRING,
            latency_ms=_NUMBER,
        ),
        "ModelInfo": _object(
            ["name", "model_version", "data_version", "classes", "image_size", "input", "preprocessing", "sha256"],
            name=_STRING,
            model_version=_STRING,
            data_version=_STRING,
            classes={"type": "array", "items": _STRING},
            image_size={"type": "integer"},
            input=tensor_meta,
            preprocessing={"type": "object"},
            export_metrics={"type": "object", "description": "validation metrics recorded at export"},
            quantization={
                "type": "object",
                "description": "format fp32, or how the int8 file was made and its quantize-guard figures",
            },
            evaluation={"type": "object", "nullable": True, "description": "metrics.json beside the model (test set)"},
            sha256=_STRING,
            loaded_at=_STRING,
        ),
        "Health": _object(["status"], status={"type": "string", "enum": ["ok"]}),
        "Ready": _object(
            ["status", "model_version"], status={"type": "string", "enum": ["ready"]}, model_version=_STRING
        ),
        "Reloaded": _object(
            ["result", "model_version", "previous_version", "sha256"],
            result={"type": "string", "enum": ["success"]},
            model_version=_STRING,
            previous_version=_STRING,
            sha256=_STRING,
        ),
        "ServerMetadata": _object(
            ["name", "version", "extensions"],
            name=_STRING,
            version=_STRING,
            extensions={"type": "array", "items": _STRING},
        ),
        "Live": _object(["live"], live={"type": "boolean"}),
        "ServerReady": _object(["ready"], ready={"type": "boolean"}),
        "ModelMetadata": _object(
            ["name", "versions", "platform", "inputs", "outputs"],
            name=_STRING,
            versions={"type": "array", "items": _STRING},
            platform=_STRING,
            inputs={"type": "array", "items": tensor_meta},
            outputs={"type": "array", "items": tensor_meta},
            parameters={"type": "object"},
        ),
        "ModelReady": _object(["name", "ready"], name=_STRING, ready={"type": "boolean"}),
        "InferInput": _object(
            ["name", "shape", "datatype", "data"],
            name={"type": "string", "enum": [INPUT_NAME]},
            shape={
                "type": "array",
                "minItems": 4,
                "maxItems": 4,
                "items": {"type": "integer", "minimum": 1},
                "description": "[N, 3, S, S] with S from GET /model and 1 <= N <= MAX_BATCH_FILES",
            },
            datatype={"type": "string", "enum": ["FP32"]},
            data=_INFER_DATA,
        ),
        "InferOutputRequest": _object(
            ["name"],
            name={"type": "string", "enum": [OUTPUT_NAME]},
            parameters={
                "type": "object",
                "properties": {
                    "binary_data": {"type": "boolean"},
                    "class_count": {"type": "integer", "maximum": 0, "description": "classification: not supported"},
                },
            },
        ),
        "InferRequest": _object(
            ["inputs"],
            id=_STRING,
            parameters={"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
            inputs={"type": "array", "minItems": 1, "maxItems": 1, "items": _ref("InferInput")},
            outputs={"type": "array", "items": _ref("InferOutputRequest")},
        ),
        "InferResponse": _object(
            ["model_name", "model_version", "id", "outputs"],
            model_name=_STRING,
            model_version=_STRING,
            id=_STRING,
            outputs={
                "type": "array",
                "items": _object(
                    ["name", "shape", "datatype"],
                    name=_STRING,
                    shape={"type": "array", "items": {"type": "integer"}},
                    datatype=_STRING,
                    data={"type": "array", "items": _NUMBER},
                ),
            },
        ),
    }


def _get(summary: str, ok: dict[str, Any], *errors: int, params: list[Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": _responses(ok, *errors)}
    if params:
        op["parameters"] = params
    return {"get": op}


_INFER_DESCRIPTION = (
    "JSON tensors: one input named 'image', FP32, shape [N,3,S,S], normalised pixels. Triton's binary tensor "
    "extension is accepted too (what tritonclient.http sends by default): the JSON header, then raw "
    "little-endian float32, with the header's length in the Inference-Header-Content-Length request header."
)


def openapi_spec(settings: Settings) -> dict[str, Any]:
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [settings.model_name]},
        "description": "the one model this server serves (MODEL_NAME); any other name is a 404",
    }
    version = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
        "description": "the live model_version (GET /model); any other version is a 404",
    }
    infer = {
        "summary": "OIP inference: probabilities [N,C] for a batch of normalised images",
        "description": _INFER_DESCRIPTION,
        "parameters": [name],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("InferRequest")}}},
        "responses": _responses(_json(_ref("InferResponse"), "Probabilities [N,C]"), 400, 404, 413, 415),
    }
    versioned = [name, version]
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Cats vs Dogs inference service",
            "version": __version__,
            "description": 'Starlette + onnxruntime. Errors are always {"error", "detail"}; the detail names the fix.',
        },
        "paths": {
            "/predict": {
                "post": {
                    "summary": "Classify one image (multipart field 'file', or a raw image/* body)",
                    "requestBody": _image_body(),
                    "responses": _responses(_json(_ref("Prediction"), "Prediction"), 400, 413, 415, 422),
                }
            },
            "/predict/batch": {
                "post": {
                    "summary": f"Classify up to {settings.max_batch_files} images in one model call; "
                    "one result per file, in order",
                    "requestBody": _batch_body(settings.max_batch_files),
                    "responses": _responses(_json(_ref("BatchResult"), "Per-file results"), 400, 413, 415),
                }
            },
            "/model": _get("The live model: version, classes, input, metrics", _json(_ref("ModelInfo"), "OK")),
            "/health": _get("Liveness", _json(_ref("Health"), "Alive")),
            "/ready": _get("Readiness: 200 once the model is loaded and warmed up", _json(_ref("Ready"), "Ready")),
            "/metrics": _get(
                "Prometheus metrics",
                {"description": "Prometheus text format", "content": {"text/plain": {"schema": _STRING}}},
            ),
            "/admin/reload": {
                "post": {
                    "summary": "Hot-reload MODEL_PATH (validate, then swap); needs ADMIN_TOKEN",
                    "security": [{"bearer": []}],
                    "responses": _responses(_json(_ref("Reloaded"), "Reloaded"), 401, 403, 404, 422),
                }
            },
            "/v2": _get("OIP server metadata", _json(_ref("ServerMetadata"), "OK")),
            "/v2/health/live": _get("OIP liveness", _json(_ref("Live"), "OK")),
            "/v2/health/ready": {
                "get": {
                    "summary": "OIP readiness",
                    "responses": {
                        "200": _json(_ref("ServerReady"), "Ready"),
                        "503": _json(
                            {"oneOf": [_ref("ServerReady"), _ref("Error")]},
                            '{"ready": false} while loading; an Error over MAX_CONNECTIONS',
                        ),
                    },
                }
            },
            "/v2/models/{name}": _get("OIP model metadata", _json(_ref("ModelMetadata"), "OK"), 404, params=[name]),
            "/v2/models/{name}/ready": _get("OIP model readiness", _json(_ref("ModelReady"), "OK"), 404, params=[name]),
            "/v2/models/{name}/infer": {"post": infer},
            "/v2/models/{name}/versions/{version}": _get(
                "OIP model metadata", _json(_ref("ModelMetadata"), "OK"), 404, params=versioned
            ),
            "/v2/models/{name}/versions/{version}/ready": _get(
                "OIP model readiness", _json(_ref("ModelReady"), "OK"), 404, params=versioned
            ),
            "/v2/models/{name}/versions/{version}/infer": {"post": {**infer, "parameters": versioned}},
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Cats vs Dogs API</title>
  <link rel="stylesheet" href="{root}/docs/static/swagger-ui.css">
  <link rel="icon" href="{root}/docs/static/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{root}/docs/static/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{url: "{root}/openapi.json", dom_id: "#swagger-ui", deepLinking: true}});
  </script>
</body>
</html>
"""


async def swagger_ui(request: Request) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(root=request.scope.get("root_path", "").rstrip("/")))


def routes(settings: Settings) -> list[BaseRoute]:
    """/openapi.json (the spec built once, here), /docs and the Swagger UI's static files."""
    spec = openapi_spec(settings)

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(spec)

    return [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", swagger_ui, methods=["GET"]),
        Mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="swagger-static"),
    ]
