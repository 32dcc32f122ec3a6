"""The original API: POST /predict, POST /predict/batch, GET /model."""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.config import Settings
from service.errors import IMAGE_FORMATS, ApiError, error_body
from service.host import ModelHost
from service.limits import InFlightLimiter
from service.metrics import Metrics
from service.model import OnnxModel
from service.preprocessing import ImageError, load_pixels, normalize

RAW_TYPES_HINT = "send multipart/form-data with the image in field 'file' (curl -F file=@cat.jpg) or a raw image/* body"


@dataclass
class Upload:
    data: bytes
    filename: str | None


@dataclass
class Decoded:
    pixels: np.ndarray  # uint8 HWC at model resolution
    width: int  # as stored in the file, before EXIF rotation
    height: int
    sha256: str


class PredictEndpoints:
    """Handlers built once with what they use, instead of fetching it from app.state on every call."""

    def __init__(self, host: ModelHost, limiter: InFlightLimiter, settings: Settings, metrics: Metrics) -> None:
        self.host = host
        self.limiter = limiter
        self.metrics = metrics
        self.model_name = settings.model_name
        self.max_pixels = settings.max_image_pixels
        self.max_batch_files = settings.max_batch_files

    def routes(self) -> list[Route]:
        return [
            Route("/predict", self.predict, methods=["POST"]),
            Route("/predict/batch", self.predict_batch, methods=["POST"]),
            Route("/model", self.model_info, methods=["GET"]),
        ]

    async def predict(self, request: Request) -> JSONResponse:
        host = self.host
        record = request.state.record
        start = time.perf_counter()
        with self.limiter.slot():
            upload = await _read_single(request)
            record.image_bytes = len(upload.data)
            model = host.model  # pin one model for the whole request, whatever a reload does meanwhile

            def work() -> tuple[Decoded, np.ndarray]:
                decoded = _decode(upload.data, model, self.max_pixels)
                return decoded, host.infer(model, normalize(decoded.pixels, model.metadata.preprocessing))[0]

            try:
                decoded, probs = await host.run(work)
            except ImageError as exc:
                raise ApiError.from_image_error(exc) from exc
        record.image_width, record.image_height = decoded.width, decoded.height
        record.image_sha256 = decoded.sha256[:12]
        result = _result(model, probs)
        record.predicted_class, record.confidence = result["predicted_class"], round(result["confidence"], 6)
        _observe(self.metrics, result, len(upload.data), decoded)
        result.update(
            model_version=model.metadata.model_version,
            request_id=record.request_id,
            latency_ms=round((time.perf_counter() - start) * 1000, 3),
        )
        return JSONResponse(result)

    async def predict_batch(self, request: Request) -> JSONResponse:
        host, metrics = self.host, self.metrics
        start = time.perf_counter()
        with self.limiter.slot():
            uploads = await _read_many(request, self.max_batch_files)
            request.state.record.batch_size = len(uploads)
            model = host.model

            def work() -> tuple[list[Decoded | ImageError], np.ndarray]:
                decoded: list[Decoded | ImageError] = []
                for upload in uploads:
                    try:
                        decoded.append(_decode(upload.data, model, self.max_pixels))
                    except ImageError as exc:
                        decoded.append(exc)
                good = [d.pixels for d in decoded if isinstance(d, Decoded)]
                if not good:
                    return decoded, np.empty((0, len(model.classes)), dtype=np.float32)
                # One ORT call for the whole batch: far cheaper than one per image.
                return decoded, host.infer(model, normalize(np.stack(good), model.metadata.preprocessing))

            decoded, probs = await host.run(work)
        results: list[dict[str, Any]] = []
        rows = iter(probs)
        for upload, item in zip(uploads, decoded, strict=True):
            if isinstance(item, ImageError):
                # One file refused inside a batch that succeeds: its entry carries the error, counted here.
                refusal = ApiError.from_image_error(item)
                metrics.rejections.labels(reason=refusal.rejection).inc()
                results.append(
                    {"filename": upload.filename, "status": refusal.status, **error_body(refusal.code, refusal.detail)}
                )
                continue
            result = _result(model, next(rows))
            _observe(metrics, result, len(upload.data), item)
            results.append({"filename": upload.filename, "status": 200, **result, "image_sha256": item.sha256[:12]})
        return JSONResponse(
            {
                "results": results,
                "model_version": model.metadata.model_version,
                "request_id": request.state.record.request_id,
                "latency_ms": round((time.perf_counter() - start) * 1000, 3),
            }
        )

    async def model_info(self, request: Request) -> JSONResponse:
        model = self.host.model
        meta = model.metadata
        size = model.image_size
        return JSONResponse(
            {
                "name": self.model_name,
                "model_version": meta.model_version,
                "data_version": meta.data_version,
                "classes": list(meta.classes),
                "input": {"name": "image", "datatype": "FP32", "shape": [-1, 3, size, size]},
                "image_size": size,
                "preprocessing": meta.preprocessing.describe(),
                "export_metrics": meta.metrics,
                "quantization": meta.quantization or {"format": "fp32"},
                "evaluation": model.evaluation,
                "sha256": model.sha256,
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(model.loaded_at)),
            }
        )


def _decode(data: bytes, model: OnnxModel, max_pixels: int) -> Decoded:
    pixels = load_pixels(data, model.image_size, max_pixels=max_pixels)
    # Header-only re-open (no pixel decode) for the stored size; load_pixels drafted it smaller.
    width, height = Image.open(io.BytesIO(data)).size
    return Decoded(pixels, width, height, hashlib.sha256(data).hexdigest())


def _result(model: OnnxModel, probs: np.ndarray) -> dict[str, Any]:
    best = int(np.argmax(probs))
    return {
        "predicted_class": model.classes[best],
        "confidence": float(probs[best]),
        "probabilities": {name: float(p) for name, p in zip(model.classes, probs, strict=True)},
    }


def _observe(metrics: Metrics, result: dict[str, Any], size: int, decoded: Decoded) -> None:
    metrics.predictions.labels(predicted_class=result["predicted_class"]).inc()
    metrics.confidence.observe(result["confidence"])
    metrics.image_bytes.observe(size)
    metrics.image_pixels.observe(decoded.width * decoded.height)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _read_single(request: Request) -> Upload:
    media = _media_type(request)
    if media == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=16)
        field = form.get("file")
        if field is None:
            raise ApiError(
                400, "missing_field", f"no 'file' field in the form (got {sorted(form.keys())}); {RAW_TYPES_HINT}"
            )
        if not isinstance(field, UploadFile):
            raise ApiError(400, "missing_field", f"field 'file' is text, not a file upload; {RAW_TYPES_HINT}")
        upload = Upload(await field.read(), field.filename)
        await form.close()
    elif media.startswith("image/") or media == "application/octet-stream":
        upload = Upload(await request.body(), None)
    else:
        raise ApiError(
            415, "unsupported_media", f"Content-Type {media or '(none)'!r} is not accepted; {RAW_TYPES_HINT}"
        )
    if not upload.data:
        raise ApiError(400, "empty_file", f"the upload is empty; send a {IMAGE_FORMATS} image")
    return upload


async def _read_many(request: Request, max_files: int) -> list[Upload]:
    hint = f"send up to {max_files} images as repeated multipart fields: curl -F file=@a.jpg -F file=@b.jpg"
    if _media_type(request) != "multipart/form-data":
        raise ApiError(415, "unsupported_media", f"/predict/batch takes multipart/form-data; {hint}")
    # One over the cap so we can tell "too many" from parse errors without reading an unbounded count.
    form = await request.form(max_files=max_files + 1, max_fields=max_files + 16)
    fields = form.getlist("file")
    if not fields:
        raise ApiError(400, "missing_field", f"no 'file' fields in the form (got {sorted(form.keys())}); {hint}")
    if len(fields) > max_files:
        raise ApiError(413, "too_many_files", f"more than {max_files} files in one batch; {hint}")
    uploads = []
    for value in fields:
        if not isinstance(value, UploadFile):
            raise ApiError(400, "missing_field", f"a 'file' field is text, not a file upload; {hint}")
        uploads.append(Upload(await value.read(), value.filename))
    await form.close()
    return uploads
