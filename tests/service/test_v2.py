"""Open Inference Protocol (KServe V2) REST endpoints."""

from __future__ import annotations

import numpy as np
import pytest
from starlette.testclient import TestClient

from service.preprocessing import normalize
from tests.service.conftest import BLUE, IMAGE_SIZE, RED, SPEC


def tensor(colors: list[tuple[int, int, int]]) -> np.ndarray:
    pixels = np.stack([np.full((IMAGE_SIZE, IMAGE_SIZE, 3), c, dtype=np.uint8) for c in colors])
    return normalize(pixels, SPEC)


def infer_request(batch: np.ndarray, nested: bool = False) -> dict:  # type: ignore[type-arg]
    data = batch.tolist() if nested else batch.reshape(-1).tolist()
    return {"id": "req-1", "inputs": [{"name": "image", "shape": list(batch.shape), "datatype": "FP32", "data": data}]}


def test_server_metadata_and_health(client: TestClient) -> None:
    meta = client.get("/v2").json()
    assert meta["name"] and meta["version"] and meta["extensions"] == []
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
    from tests.service.conftest import make_settings

    with TestClient(create_app(make_settings(model_path, max_batch_files=2))) as c:
        response = c.post("/v2/models/cats-dogs/infer", json=infer_request(tensor([RED, RED, RED])))
        assert response.status_code == 400 and response.json()["error"] == "invalid_shape"
