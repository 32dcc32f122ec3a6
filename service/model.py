"""The ONNX model: load, validate, warm up, predict. Nothing here knows about HTTP."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from service.metadata import INPUT_NAME, OUTPUT_NAME, ModelMetadata
from service.preprocessing import load_pixels, normalize

log = logging.getLogger("catsdogs.model")


class ModelError(RuntimeError):
    """A model file that cannot be served; the message says why and what to do."""


@dataclass(frozen=True)
class SessionTuning:
    intra_op_threads: int = 1
    inter_op_threads: int = 1


@dataclass
class OnnxModel:
    path: Path
    session: ort.InferenceSession
    metadata: ModelMetadata
    sha256: str
    batch_limit: int | None  # None: dynamic batch axis; else the fixed batch size the graph takes
    evaluation: dict[str, Any] | None  # metrics.json beside the model: the test-set evaluation
    loaded_at: float = field(default_factory=time.time)

    @property
    def image_size(self) -> int:
        return self.metadata.preprocessing.image_size

    @property
    def classes(self) -> tuple[str, ...]:
        return self.metadata.classes

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, 3, S, S] -> probabilities [N, C]. Thread-safe: ORT sessions allow concurrent run()."""
        if self.batch_limit is None or len(batch) == self.batch_limit:
            return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        step = self.batch_limit
        parts = [
            self.session.run([OUTPUT_NAME], {INPUT_NAME: batch[i : i + step]})[0] for i in range(0, len(batch), step)
        ]
        return np.concatenate(parts)


def session_options(tuning: SessionTuning) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # a plain conv chain: no parallel branches to exploit
    options.intra_op_num_threads = tuning.intra_op_threads
    options.inter_op_num_threads = tuning.inter_op_threads
    # Spinning worker threads would steal the cores the event loop and JPEG decoding need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def load_model(path: Path, tuning: SessionTuning) -> OnnxModel:
    """Load and fully check a model; raises ModelError, never returns a model that can't serve."""
    return model_from_bytes(read_model_file(path), Path(path), tuning)


def read_model_file(path: Path) -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelError(f"no model file at {path}; set MODEL_PATH or run `dvc repro export` to create it") from exc


def model_from_bytes(data: bytes, path: Path, tuning: SessionTuning) -> OnnxModel:
    """Load and fully check the model file `path` held, from bytes already read (workers share one copy)."""
    try:
        session = ort.InferenceSession(data, session_options(tuning), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ModelError(f"onnxruntime cannot load {path}: {exc}; re-export the model") from exc
    try:
        metadata = ModelMetadata.from_props(dict(session.get_modelmeta().custom_metadata_map))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: {exc}") from exc
    batch_limit = _check_signature(session, metadata, path)
    model = OnnxModel(
        path=path,
        session=session,
        metadata=metadata,
        sha256=hashlib.sha256(data).hexdigest(),
        batch_limit=batch_limit,
        evaluation=_read_evaluation(path.parent / "metrics.json"),
    )
    _warm_up(model)
    return model


def _check_signature(session: ort.InferenceSession, metadata: ModelMetadata, path: Path) -> int | None:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    size = metadata.preprocessing.image_size
    fix = f"; re-export so the graph takes float32 '{INPUT_NAME}' [N,3,{size},{size}] and returns '{OUTPUT_NAME}'"
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        raise ModelError(f"{path} has inputs {sorted(inputs)} and outputs {sorted(outputs)}{fix}")
    image = inputs[INPUT_NAME]
    if image.type != "tensor(float)" or len(image.shape) != 4:
        raise ModelError(f"{path}: input '{INPUT_NAME}' is {image.type} {image.shape}{fix}")
    for axis, want in ((1, 3), (2, size), (3, size)):
        if isinstance(image.shape[axis], int) and image.shape[axis] != want:
            raise ModelError(f"{path}: input '{INPUT_NAME}' shape {image.shape} disagrees with metadata{fix}")
    batch = image.shape[0]
    return batch if isinstance(batch, int) and batch > 0 else None


def _warm_up(model: OnnxModel) -> None:
    """First run allocates and plans; do it now so /ready means 'fast', and prove the output is sane.

    The image goes through the real preprocessing too: Pillow loads its JPEG plugin on
    first use, which otherwise costs the first request about 20 ms.
    """
    size = model.image_size
    jpeg = io.BytesIO()
    Image.new("RGB", (2 * size, 2 * size), (128, 96, 64)).save(jpeg, format="JPEG")
    image = normalize(load_pixels(jpeg.getvalue(), size), model.metadata.preprocessing)
    for batch in (image, np.zeros((2, 3, size, size), dtype=np.float32)):
        n = len(batch)
        probs = model.predict(batch)
        want = (n, len(model.classes))
        if probs.shape != want or not np.all(np.isfinite(probs)):
            raise ModelError(f"{model.path}: warm-up output has shape {probs.shape}, expected {want} finite values")
        if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3) or probs.min() < 0:
            raise ModelError(
                f"{model.path}: warm-up outputs do not look like probabilities (row sums {probs.sum(axis=1)}); "
                "export the model with its softmax"
            )


def _read_evaluation(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable evaluation metrics", extra={"path": str(path), "reason": str(exc)})
        return None
    return value if isinstance(value, dict) else {"value": value}
