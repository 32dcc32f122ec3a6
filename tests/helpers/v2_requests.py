"""KServe v2 (Open Inference Protocol) request bodies, JSON and Triton's binary tensor extension."""

from __future__ import annotations

import json

import numpy as np

from service.preprocessing import normalize
from tests.helpers.onnx_models import IMAGE_SIZE, SPEC


def tensor(colors: list[tuple[int, int, int]]) -> np.ndarray:
    pixels = np.stack([np.full((IMAGE_SIZE, IMAGE_SIZE, 3), c, dtype=np.uint8) for c in colors])
    return normalize(pixels, SPEC)


def infer_request(batch: np.ndarray, nested: bool = False) -> dict:  # type: ignore[type-arg]
    data = batch.tolist() if nested else batch.reshape(-1).tolist()
    return {"id": "req-1", "inputs": [{"name": "image", "shape": list(batch.shape), "datatype": "FP32", "data": data}]}


def binary_request(batch: np.ndarray, **request: object) -> tuple[bytes, dict[str, str]]:
    """Triton's binary tensor extension: a JSON header, then the raw float32 bytes."""
    raw = batch.astype("<f4").tobytes()
    tensor = {
        "name": "image",
        "shape": list(batch.shape),
        "datatype": "FP32",
        "parameters": {"binary_data_size": len(raw)},
    }
    head = json.dumps({"inputs": [tensor], **request}).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}
