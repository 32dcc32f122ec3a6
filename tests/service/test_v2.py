"""Open Inference Protocol (KServe V2) REST endpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from starlette.testclient import TestClient

from tests.helpers.images import BLUE, RED
from tests.helpers.onnx_models import IMAGE_SIZE
from tests.helpers.v2_requests import binary_request, infer_request, tensor


def test_server_metadata_and_health(client: TestClient) -> None:
    meta = client.get("/v2").json()
    assert meta["name"] and meta["version"] and meta["extensions"] == ["binary_tensor_data"]
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_model_metadata_describes_tensors(client: TestClient) -> None:
    meta = client.get("/v2/models/cats-dogs").json()
    assert meta["name"] == "cats-dogs" and meta["versions"] == ["v1"]
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, IMAGE_SIZE, IMAGE_SIZE]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]
    assert client.get("/v2/models/cats-dogs/ready").json() == {"name": "cats-dogs", "ready": True}
    assert client.get("/v2/models/cats-dogs/versions/v1").status_code == 200


@pytest.mark.parametrize("nested", [False, True])
def test_infer_returns_probabilities_for_flat_and_nested_data(client: TestClient, nested: bool) -> None:
    response = client.post("/v2/models/cats-dogs/infer", json=infer_request(tensor([RED, BLUE]), nested))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "cats-dogs" and body["model_version"] == "v1" and body["id"] == "req-1"
    (out,) = body["outputs"]
    assert out["name"] == "probabilities" and out["datatype"] == "FP32" and out["shape"] == [2, 2]
    probs = np.array(out["data"]).reshape(2, 2)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert probs[0, 0] > 0.5 > probs[1, 0]  # red -> cat, blue -> dog


def test_infer_on_versioned_path_and_requested_output(client: TestClient) -> None:
    request = infer_request(tensor([RED])) | {"outputs": [{"name": "probabilities"}]}
    assert client.post("/v2/models/cats-dogs/versions/v1/infer", json=request).status_code == 200
    wrong = client.post("/v2/models/cats-dogs/versions/v9/infer", json=request)
    assert wrong.status_code == 404 and "v1" in wrong.json()["error"] + wrong.json()["detail"]


def test_unknown_model_name_is_404_with_error_key(client: TestClient) -> None:
    for response in (
        client.get("/v2/models/horses"),
        client.get("/v2/models/horses/ready"),
        client.post("/v2/models/horses/infer", json=infer_request(tensor([RED]))),
    ):
        assert response.status_code == 404
        assert response.json()["error"] == "model_not_found"


@pytest.mark.parametrize(
    "mutate,code",
    [
        (lambda r: r["inputs"][0].update(shape=[1, 3, 16, 16]), "invalid_shape"),
        (lambda r: r["inputs"][0].update(shape=[1, 3, 32]), "invalid_shape"),
        (lambda r: r["inputs"][0].update(shape=[0, 3, 32, 32]), "invalid_shape"),
        (lambda r: r["inputs"][0].update(data=r["inputs"][0]["data"][:-1]), "invalid_shape"),
        (lambda r: r["inputs"][0].update(datatype="INT64"), "invalid_datatype"),
        (lambda r: r["inputs"][0].update(name="pixels"), "unknown_input"),
        (lambda r: r["inputs"][0].update(data=["a"] * (3 * 32 * 32)), "invalid_data"),
        (lambda r: r["inputs"][0].pop("data"), "missing_data"),
        (lambda r: r.update(inputs=[]), "invalid_inputs"),
        (lambda r: r.pop("inputs"), "invalid_request"),
        (lambda r: r.update(outputs=[{"name": "logits"}]), "unknown_output"),
    ],
)
def test_bad_tensors_are_400(client: TestClient, mutate, code: str) -> None:  # type: ignore[no-untyped-def]
    request = infer_request(tensor([RED]))
    mutate(request)
    response = client.post("/v2/models/cats-dogs/infer", json=request)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == code


def test_non_json_infer_body_is_400(client: TestClient) -> None:
    response = client.post(
        "/v2/models/cats-dogs/infer", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_json"


def test_infer_batch_over_cap_is_400(model_path) -> None:  # type: ignore[no-untyped-def]
    from service.app import create_app
    from tests.helpers.service_app import make_settings

    with TestClient(create_app(make_settings(model_path, max_batch_files=2))) as c:
        response = c.post("/v2/models/cats-dogs/infer", json=infer_request(tensor([RED, RED, RED])))
        assert response.status_code == 400 and response.json()["error"] == "invalid_shape"


def split_binary_response(response) -> tuple[dict, bytes]:  # type: ignore[no-untyped-def, type-arg]
    length = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:length]), response.content[length:]


def test_binary_input_gives_the_same_probabilities_as_json(client: TestClient) -> None:
    batch = tensor([RED, BLUE])
    as_json = np.array(
        client.post("/v2/models/cats-dogs/infer", json=infer_request(batch)).json()["outputs"][0]["data"]
    )
    body, headers = binary_request(batch)
    response = client.post("/v2/models/cats-dogs/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    (out,) = response.json()["outputs"]  # no binary output asked for: JSON back
    assert np.array_equal(np.array(out["data"]), as_json)


@pytest.mark.parametrize(
    "ask",
    [
        {"parameters": {"binary_data_output": True}},
        {"outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]},
        {
            "parameters": {"binary_data_output": False},
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        },
    ],
)
def test_binary_output_when_asked_per_request_or_per_output(client: TestClient, ask: dict) -> None:  # type: ignore[type-arg]
    body, headers = binary_request(tensor([RED, BLUE]), **ask)
    response = client.post("/v2/models/cats-dogs/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    head, raw = split_binary_response(response)
    (out,) = head["outputs"]
    assert "data" not in out and out["parameters"] == {"binary_data_size": 16} and out["shape"] == [2, 2]
    probs = np.frombuffer(raw, dtype="<f4").reshape(2, 2)
    assert probs[0, 0] > 0.5 > probs[1, 0]


def test_an_output_can_opt_out_of_the_requests_binary_default(client: TestClient) -> None:
    ask = {
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}],
    }
    body, headers = binary_request(tensor([RED]), **ask)
    response = client.post("/v2/models/cats-dogs/infer", content=body, headers=headers)
    assert response.status_code == 200 and "inference-header-content-length" not in response.headers
    assert len(response.json()["outputs"][0]["data"]) == 2


@pytest.mark.parametrize(
    "tamper,code",
    [
        (lambda body, headers: (body[:-4], headers), "invalid_binary"),  # a pixel short
        (lambda body, headers: (body + b"\0\0\0\0", headers), "invalid_binary"),  # trailing bytes
        (lambda body, headers: (body, headers | {"Inference-Header-Content-Length": "abc"}), "invalid_header"),
        (
            lambda body, headers: (body, headers | {"Inference-Header-Content-Length": str(len(body) + 1)}),
            "invalid_header",
        ),
        (lambda body, headers: (body, headers | {"Inference-Header-Content-Length": "0"}), "invalid_header"),
        (lambda body, headers: (body, headers | {"Inference-Header-Content-Length": "10"}), "invalid_json"),
    ],
)
def test_malformed_binary_requests_are_400(client: TestClient, tamper, code: str) -> None:  # type: ignore[no-untyped-def]
    body, headers = tamper(*binary_request(tensor([RED])))
    response = client.post("/v2/models/cats-dogs/infer", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == code


def test_bytes_after_a_json_tensor_are_400(client: TestClient) -> None:
    head = json.dumps(infer_request(tensor([RED]))).encode()
    response = client.post(
        "/v2/models/cats-dogs/infer",
        content=head + b"\0" * 8,
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_binary"


def test_classification_extension_and_compressed_bodies_are_refused_clearly(client: TestClient) -> None:
    request = infer_request(tensor([RED])) | {"outputs": [{"name": "probabilities", "parameters": {"class_count": 1}}]}
    response = client.post("/v2/models/cats-dogs/infer", json=request)
    assert response.status_code == 400 and response.json()["error"] == "unsupported_parameter"
    assert "class_count" in response.json()["detail"]
    gzipped = client.post("/v2/models/cats-dogs/infer", content=b"\x1f\x8b", headers={"Content-Encoding": "gzip"})
    assert gzipped.status_code == 415 and "uncompressed" in gzipped.json()["detail"]


def nan_json_body(value: float, nested: bool = False) -> bytes:
    """json.dumps writes NaN/Infinity literals, as non-strict clients (and Python's own json) do."""
    batch = tensor([RED, BLUE])
    data = batch.tolist() if nested else batch.reshape(-1).tolist()
    target = data[1][2][5] if nested else data
    target[7] = value
    request = {"inputs": [{"name": "image", "shape": list(batch.shape), "datatype": "FP32", "data": data}]}
    return json.dumps(request).encode()


@pytest.mark.parametrize(
    "body",
    [
        nan_json_body(float("nan")),
        nan_json_body(float("inf")),
        nan_json_body(float("-inf"), nested=True),
        nan_json_body(1e39),  # finite in JSON, infinite once cast to FP32
    ],
    ids=["nan", "inf", "minus-inf-nested", "beyond-fp32"],
)
def test_non_finite_json_values_are_400_naming_the_problem(client: TestClient, body: bytes) -> None:
    response = client.post("/v2/models/cats-dogs/infer", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error", "detail"}
    assert response.json()["error"] == "invalid_data"
    assert "1 non-finite" in response.json()["detail"] and "finite normalised pixel values" in response.json()["detail"]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_binary_values_are_400(client: TestClient, value: float) -> None:
    batch = tensor([RED, BLUE])
    batch[1, 0, 3, 4] = value
    body, headers = binary_request(batch)
    response = client.post("/v2/models/cats-dogs/infer", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_data"
    assert f"value #{IMAGE_SIZE * IMAGE_SIZE * 3 + 3 * IMAGE_SIZE + 4} is" in response.json()["detail"]
