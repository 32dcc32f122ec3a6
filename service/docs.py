"""GET /openapi.json (hand-written OpenAPI 3.1) and GET /docs (Swagger UI from the
swagger-ui-bundle wheel's own files, mounted at /docs/static: works offline)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from service import __version__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Bad request: empty upload, missing field, malformed body",
        401: "Missing bearer token",
        403: "Wrong bearer token",
        404: "Unknown model name/version, or admin disabled",
        413: "Body over MAX_UPLOAD_BYTES, or too many files",
        415: "Not an image / wrong Content-Type",
        422: "Image could not be decoded (truncated, too many pixels) or reload failed",
        503: "Over MAX_IN_FLIGHT (see Retry-After) or not ready",
    }
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


_IMAGE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
_BATCH_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                },
            }
        }
    },
}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
    },
    "Prediction": {
        "type": "object",
        "required": ["predicted_class", "confidence", "probabilities", "model_version"],
        "properties": {
            "predicted_class": {"type": "string", "example": "cat"},
            "confidence": {"type": "number", "example": 0.97},
            "probabilities": {
                "type": "object",
                "additionalProperties": {"type": "number"},
                "example": {"cat": 0.97, "dog": 0.03},
            },
            "model_version": {"type": "string"},
            "request_id": {"type": "string"},
            "latency_ms": {"type": "number"},
        },
    },
    "BatchItem": {
        "type": "object",
        "description": "A Prediction (status 200) or an Error entry for a file that could not be used.",
        "properties": {
            "filename": {"type": ["string", "null"]},
            "status": {"type": "integer"},
            "predicted_class": {"type": "string"},
            "confidence": {"type": "number"},
            "probabilities": {"type": "object", "additionalProperties": {"type": "number"}},
            "image_sha256": {"type": "string"},
            "error": {"type": "string"},
            "detail": {"type": "string"},
        },
    },
    "BatchResult": {
        "type": "object",
        "properties": {
            "results": {"type": "array", "items": _ref("BatchItem")},
            "model_version": {"type": "string"},
            "request_id": {"type": "string"},
            "latency_ms": {"type": "number"},
        },
    },
    "ModelInfo": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "model_version": {"type": "string"},
            "data_version": {"type": "string"},
            "classes": {"type": "array", "items": {"type": "string"}},
            "image_size": {"type": "integer"},
            "input": {"type": "object"},
            "preprocessing": {"type": "object"},
            "export_metrics": {"type": "object", "description": "validation metrics recorded at export"},
            "evaluation": {"type": ["object", "null"], "description": "metrics.json beside the model (test set)"},
            "sha256": {"type": "string"},
            "loaded_at": {"type": "string"},
        },
    },
    "Tensor": {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string", "example": "image"},
            "shape": {"type": "array", "items": {"type": "integer"}, "example": [1, 3, 64, 64]},
            "datatype": {"type": "string", "example": "FP32"},
            "data": {"type": "array", "description": "flat row-major or nested", "items": {}},
        },
    },
    "InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "inputs": {"type": "array", "items": _ref("Tensor")},
            "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        },
    },
    "InferResponse": {
        "type": "object",
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": _ref("Tensor")},
        },
    },
}


def _get(summary: str, response: dict[str, Any], *errors: int, params: list[Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": response, **_errors(*errors)}}
    if params:
        op["parameters"] = params
    return {"get": op}


def openapi_spec() -> dict[str, Any]:
    ok = _json({"type": "object"}, "OK")
    model_meta = _get("OIP model metadata", ok, 404, params=[_NAME])
    model_ready = _get("OIP model readiness", ok, 404, 503, params=[_NAME])
    infer = {
        "post": {
            "summary": "OIP inference on JSON tensors (normalised float32 [N,3,S,S] named 'image')",
            "parameters": [_NAME],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("InferRequest")}}},
            "responses": {"200": _json(_ref("InferResponse"), "Probabilities [N,C]"), **_errors(400, 404, 413, 503)},
        }
    }
    versioned = [_NAME, _VERSION]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Cats vs Dogs inference service",
            "version": __version__,
            "description": 'Starlette + onnxruntime. Errors are always {"error", "detail"}.',
        },
        "paths": {
            "/predict": {
                "post": {
                    "summary": "Classify one image (multipart field 'file' or a raw image/* body)",
                    "requestBody": _IMAGE_BODY,
                    "responses": {"200": _json(_ref("Prediction"), "Prediction"), **_errors(400, 413, 415, 422, 503)},
                }
            },
            "/predict/batch": {
                "post": {
                    "summary": "Classify several images in one model call; one result per file, in order",
                    "requestBody": _BATCH_BODY,
                    "responses": {"200": _json(_ref("BatchResult"), "Per-file results"), **_errors(400, 413, 415, 503)},
                }
            },
            "/model": _get("The live model: version, classes, input, metrics", _json(_ref("ModelInfo"), "OK")),
            "/health": _get("Liveness", ok),
            "/ready": _get("Readiness: 200 once the model is loaded and warmed up", ok, 503),
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/admin/reload": {
                "post": {
                    "summary": "Hot-reload MODEL_PATH (validate, then swap); needs ADMIN_TOKEN",
                    "security": [{"bearer": []}],
                    "responses": {"200": ok, **_errors(401, 403, 404, 422)},
                }
            },
            "/v2": _get("OIP server metadata", ok),
            "/v2/health/live": _get("OIP liveness", ok),
            "/v2/health/ready": _get("OIP readiness", ok, 503),
            "/v2/models/{name}": model_meta,
            "/v2/models/{name}/ready": model_ready,
            "/v2/models/{name}/infer": infer,
            "/v2/models/{name}/versions/{version}": _get("OIP model metadata", ok, 404, params=versioned),
            "/v2/models/{name}/versions/{version}/ready": _get("OIP model readiness", ok, 404, params=versioned),
            "/v2/models/{name}/versions/{version}/infer": {"post": {**infer["post"], "parameters": versioned}},
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.openapi)


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
