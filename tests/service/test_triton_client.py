"""NVIDIA's own `tritonclient.http`, unchanged, against the real server over HTTP.

Its defaults send tensors with the binary tensor extension and ask for binary outputs;
JSON tensors are the other mode. Both must work with no client-side adaptation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.preprocessing import normalize
from tests.helpers.images import BLUE, RED
from tests.helpers.onnx_models import IMAGE_SIZE, SPEC, build_model
from tests.helpers.service_process import ServiceProcess, start_service, stop_service

MODEL = "cats-dogs"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    work = tmp_path_factory.mktemp("triton")
    svc = start_service(build_model(work / "model.onnx", version="v7"), work)
    yield svc
    stop_service(svc)


@pytest.fixture
def client(live: ServiceProcess) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=f"127.0.0.1:{live.port}")
    yield c
    c.close()


def red_and_blue() -> np.ndarray:
    pixels = np.stack([np.full((IMAGE_SIZE, IMAGE_SIZE, 3), c, dtype=np.uint8) for c in (RED, BLUE)])
    return normalize(pixels, SPEC)


def test_health_readiness_and_metadata_through_tritonclient(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, model_version="v7")
    assert not client.is_model_ready("horses")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata(MODEL)
    assert meta["versions"] == ["v7"]
    assert meta["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, 3, IMAGE_SIZE, IMAGE_SIZE]}


@pytest.mark.parametrize("binary", [True, False], ids=["binary-tensors", "json-tensors"])
def test_tritonclient_infer_returns_the_class_probabilities(client: triton.InferenceServerClient, binary: bool) -> None:
    batch = red_and_blue()
    image = triton.InferInput("image", list(batch.shape), "FP32")
    image.set_data_from_numpy(batch, binary_data=binary)
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary)]
    result = client.infer(MODEL, [image], outputs=outputs, request_id="trt-1")
    probs = result.as_numpy("probabilities")
    assert probs.shape == (2, 2) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert probs[0, 0] > 0.5 > probs[1, 0]  # red -> cat, blue -> dog
    response = result.get_response()
    assert response["model_version"] == "v7" and response["id"] == "trt-1"


def test_tritonclient_defaults_with_no_outputs_named(client: triton.InferenceServerClient) -> None:
    batch = red_and_blue()
    image = triton.InferInput("image", list(batch.shape), "FP32")
    image.set_data_from_numpy(batch)  # binary by default; no outputs -> binary_data_output=true
    probs = client.infer(MODEL, [image]).as_numpy("probabilities")
    assert probs is not None and probs.argmax(axis=1).tolist() == [0, 1]


def test_tritonclient_surfaces_the_servers_error(client: triton.InferenceServerClient) -> None:
    wrong = np.zeros((1, 3, IMAGE_SIZE // 2, IMAGE_SIZE // 2), dtype=np.float32)
    image = triton.InferInput("image", list(wrong.shape), "FP32")
    image.set_data_from_numpy(wrong)
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, [image])
    assert info.value.status() == "400" and "invalid_shape" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.infer("horses", [image])
    assert info.value.status() == "404"


def test_tritonclient_version_pinned_infer(client: triton.InferenceServerClient) -> None:
    batch = red_and_blue()[:1]
    image = triton.InferInput("image", list(batch.shape), "FP32")
    image.set_data_from_numpy(batch)
    assert client.infer(MODEL, [image], model_version="v7").as_numpy("probabilities").shape == (1, 2)
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, [image], model_version="v1")
    assert info.value.status() == "404"
