"""Fixtures: a tiny ONNX model built with onnx.helper, images made with Pillow, and
the service both in-process (ASGI TestClient) and as a real uvicorn subprocess."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

with warnings.catch_warnings():  # starlette suggests httpx2; httpx is what the venv has
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.metadata import ModelMetadata
from service.preprocessing import PreprocessSpec
from tests.service_process import ServiceProcess, start_service, stop_service

REPO = Path(__file__).resolve().parents[2]
IMAGE_SIZE = 32
SPEC = PreprocessSpec(image_size=IMAGE_SIZE, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
RED, BLUE = (220, 20, 20), (20, 20, 220)


def build_model(
    path: Path,
    *,
    version: str = "v1",
    classes: tuple[str, str] = ("cat", "dog"),
    softmax: bool = True,
    metrics: dict[str, float] | None = None,
) -> Path:
    """image [N,3,S,S] -> GlobalAveragePool -> Flatten -> Gemm(3->2) -> Softmax.

    The weights score red minus blue, so a red image is classes[0] and a blue one classes[1].
    """
    weights = np.array([[0.5, 0.0, -0.5], [-0.5, 0.0, 0.5]], dtype=np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits" if softmax else "probabilities"], transB=1),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "tiny-colour",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=[
            helper.make_tensor("W", TensorProto.FLOAT, [2, 3], weights.flatten().tolist()),
            helper.make_tensor("B", TensorProto.FLOAT, [2], [0.0, 0.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelMetadata(
        classes=classes,
        preprocessing=SPEC,
        model_version=version,
        data_version="data-test",
        metrics=metrics if metrics is not None else {"val_accuracy": 0.91},
    )
    helper.set_model_props(model, meta.to_props())
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def image_bytes(
    color: tuple[int, ...] = RED,
    size: tuple[int, int] = (120, 90),
    fmt: str = "JPEG",
    mode: str = "RGB",
    **save: object,
) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format=fmt, **save)
    return buf.getvalue()


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return build_model(tmp_path / "models" / "model.onnx")


def make_settings(model_path: Path, **overrides: object) -> Settings:
    return Settings(model_path=model_path, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def client(model_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(model_path)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def server(model_path: Path, tmp_path: Path) -> Iterator[ServiceProcess]:
    srv = start_service(model_path, tmp_path, ADMIN_TOKEN="s3cret")
    yield srv
    stop_service(srv)


@pytest.fixture(params=["1", "2"], ids=["1-worker", "2-workers"])
def workers(request: pytest.FixtureRequest) -> str:
    """WORKERS for a test whose behaviour must not depend on it: hostile uploads, slow clients."""
    return str(request.param)


@pytest.fixture
def any_server(model_path: Path, tmp_path: Path, workers: str) -> Iterator[ServiceProcess]:
    srv = start_service(model_path, tmp_path, WORKERS=workers)
    yield srv
    stop_service(srv)
