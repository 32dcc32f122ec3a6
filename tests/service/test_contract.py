"""The original-compatible API contract, /model, docs, health and readiness (ASGI client)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openapi_spec_validator import OpenAPIV30SpecValidator
from starlette.testclient import TestClient

from service.app import create_app
from tests.helpers.images import BLUE, RED, image_bytes
from tests.helpers.onnx_models import build_model
from tests.helpers.service_app import make_settings


def test_predict_multipart_returns_the_original_fields(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("cat.jpg", image_bytes(RED), "image/jpeg")})
    assert response.status_code == 200
    body = response.json()
    assert body["predicted_class"] == "cat"
    assert set(body["probabilities"]) == {"cat", "dog"}
    assert body["confidence"] == max(body["probabilities"].values())
    assert 0.5 < body["confidence"] < 1.0
    assert body["model_version"] == "v1"
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["latency_ms"] > 0


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png", "application/octet-stream"])
def test_predict_accepts_a_raw_image_body(client: TestClient, content_type: str) -> None:
    response = client.post("/predict", content=image_bytes(BLUE, fmt="PNG"), headers={"content-type": content_type})
    assert response.status_code == 200
    assert response.json()["predicted_class"] == "dog"


def test_batch_returns_one_result_per_file_in_order_with_bad_file_isolated(client: TestClient) -> None:
    files = [
        ("file", ("red.jpg", image_bytes(RED))),
        ("file", ("notes.jpg", b"plain text, not a picture")),
        ("file", ("blue.png", image_bytes(BLUE, fmt="PNG"))),
        ("file", ("empty.jpg", b"")),
    ]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["filename"] for r in results] == ["red.jpg", "notes.jpg", "blue.png", "empty.jpg"]
    assert results[0]["predicted_class"] == "cat" and results[0]["status"] == 200
    assert results[1]["error"] == "not_an_image" and results[1]["status"] == 415 and results[1]["detail"]
    assert results[2]["predicted_class"] == "dog"
    assert results[3]["error"] == "empty_file" and results[3]["status"] == 400
    assert response.json()["model_version"] == "v1"


def test_batch_results_equal_single_predictions(client: TestClient) -> None:
    images = [image_bytes((r, 60, 255 - r)) for r in (10, 120, 250)]
    batch = client.post("/predict/batch", files=[("file", (f"{i}.jpg", d)) for i, d in enumerate(images)]).json()
    for data, result in zip(images, batch["results"], strict=True):
        single = client.post("/predict", files={"file": ("x.jpg", data)}).json()
        assert result["probabilities"] == pytest.approx(single["probabilities"], abs=1e-6)


def test_model_endpoint_reports_metadata_and_evaluation_file(tmp_path: Path) -> None:
    path = build_model(tmp_path / "m" / "model.onnx", version="2024.1", metrics={"val_accuracy": 0.93})
    (path.parent / "metrics.json").write_text(json.dumps({"test_accuracy": 0.92, "test_f1": 0.91}))
    with TestClient(create_app(make_settings(path))) as c:
        body = c.get("/model").json()
    assert body["model_version"] == "2024.1"
    assert body["data_version"] == "data-test"
    assert body["classes"] == ["cat", "dog"]
    assert body["image_size"] == 32
    assert body["input"]["shape"] == [-1, 3, 32, 32]
    assert body["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert body["export_metrics"] == {"val_accuracy": 0.93}
    assert body["evaluation"] == {"test_accuracy": 0.92, "test_f1": 0.91}
    assert len(body["sha256"]) == 64


def test_model_endpoint_without_metrics_json_has_null_evaluation(client: TestClient) -> None:
    assert client.get("/model").json()["evaluation"] is None


def test_class_names_come_from_model_metadata(tmp_path: Path) -> None:
    path = build_model(tmp_path / "model.onnx", classes=("kitty", "puppy"))
    with TestClient(create_app(make_settings(path))) as c:
        body = c.post("/predict", files={"file": ("a.jpg", image_bytes(RED))}).json()
    assert body["predicted_class"] == "kitty"
    assert set(body["probabilities"]) == {"kitty", "puppy"}


def test_health_and_ready_are_200_once_loaded(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["model_version"] == "v1"


def test_ready_is_503_and_predict_is_503_before_the_model_is_loaded(model_path: Path) -> None:
    client = TestClient(create_app(make_settings(model_path)))  # no `with`: lifespan never runs
    assert client.get("/health").status_code == 200
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["error"] == "not_ready"
    assert client.get("/v2/health/ready").status_code == 503
    response = client.post("/predict", files={"file": ("a.jpg", image_bytes())})
    assert response.status_code == 503 and response.json()["error"] == "not_ready"


def test_start_up_fails_with_a_clear_error_on_a_missing_model(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="MODEL_PATH"):
        with TestClient(create_app(make_settings(tmp_path / "absent.onnx"))):
            pass


def test_request_id_is_echoed_when_sent_and_generated_otherwise(client: TestClient) -> None:
    sent = client.post("/predict", files={"file": ("a.jpg", image_bytes())}, headers={"X-Request-ID": "abc-123"})
    assert sent.headers["x-request-id"] == "abc-123"
    assert sent.json()["request_id"] == "abc-123"
    generated = client.get("/health")
    assert len(generated.headers["x-request-id"]) == 32
    hostile = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces" + "x" * 200})
    assert hostile.headers["x-request-id"] != "bad id\twith spaces" + "x" * 200


def test_openapi_is_valid_openapi_3_0_describing_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    # 3.0.x because the bundled Swagger UI renders nothing else; the meta-schema check catches 3.1-isms.
    assert spec["openapi"] == "3.0.3"
    errors = [error.message[:300] for error in OpenAPIV30SpecValidator(spec).iter_errors()]
    assert not errors, errors
    app_paths = {r.path for r in client.app.routes if not r.path.startswith("/docs/static")}  # type: ignore[attr-defined]
    assert app_paths - {"/docs", "/openapi.json"} == set(spec["paths"])
    for path, ops in spec["paths"].items():
        for op in ops.values():
            assert "200" in op["responses"], path
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}, path
    refs = {ref.split("/")[-1] for ref in _refs(spec)}
    assert refs <= set(spec["components"]["schemas"])


def test_openapi_states_the_servers_own_limits(model_path: Path) -> None:
    with TestClient(create_app(make_settings(model_path, max_batch_files=5, model_name="pets"))) as c:
        spec = c.get("/openapi.json").json()
    files = spec["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert files["required"] == ["file"] and files["properties"]["file"]["maxItems"] == 5
    name = spec["paths"]["/v2/models/{name}/infer"]["post"]["parameters"][0]
    assert name["schema"]["enum"] == ["pets"]


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_docs_page_uses_bundled_swagger_assets_not_a_cdn(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")  # no absolute URLs: nothing off-box
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/docs/static/{asset}" in page.text
        response = client.get(f"/docs/static/{asset}")
        assert response.status_code == 200 and len(response.content) > 10_000
