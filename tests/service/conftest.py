"""Fixtures: a tiny ONNX model built with onnx.helper, images made with Pillow, and
the service both in-process (ASGI TestClient) and as a real uvicorn subprocess."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A real `python -m service` process on 127.0.0.1."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for raw in self.log_path.read_text().splitlines():
            lines.append(json.loads(raw))  # every stdout line must be JSON
        return lines

    def wait_for_log(self, predicate, timeout: float = 10.0) -> dict[str, object]:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_lines():
                if predicate(line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no matching log line within {timeout}s:\n{self.log_path.read_text()}")


def start_server(python: str, model_path: Path, tmp_path: Path, **env: str) -> Server:
    port = free_port()
    log_path = tmp_path / f"server-{port}.log"
    full_env = {
        "PATH": os.environ.get("PATH", ""),
        "MODEL_PATH": str(model_path),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        **env,
    }
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([python, "-m", "service"], cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"server not ready within 30 s:\n{log_path.read_text()}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture
def server(model_path: Path, tmp_path: Path) -> Iterator[Server]:
    srv = start_server(sys.executable, model_path, tmp_path, ADMIN_TOKEN="s3cret")
    yield srv
    stop_server(srv)
