"""A bug inside the service still answers with the {"error", "detail"} body, as a counted 500."""

from __future__ import annotations

import numpy as np
import pytest
from starlette.testclient import TestClient

from service.model import OnnxModel
from tests.helpers.images import RED, image_bytes
from tests.helpers.prometheus import samples


def explode(model: OnnxModel, batch: np.ndarray) -> np.ndarray:
    raise RuntimeError("secret internals: /srv/model.onnx tensor 'x' exploded")


@pytest.mark.parametrize(
    "path,files",
    [
        ("/predict", {"file": ("a.jpg", image_bytes(RED))}),
        ("/predict/batch", [("file", ("a.jpg", image_bytes(RED)))]),
    ],
)
def test_unexpected_exception_is_a_json_500_that_names_the_request_id(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, path: str, files: object
) -> None:
    monkeypatch.setattr(client.app.state.host, "infer", explode)  # type: ignore[attr-defined]
    response = client.post(path, files=files, headers={"X-Request-ID": "req-500"})  # type: ignore[arg-type]
    assert response.status_code == 500
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == "internal_error"
    assert "req-500" in body["detail"] and "retry" in body["detail"]
    assert "secret internals" not in response.text, "the exception text belongs in the log, not the response"
    assert response.headers["x-request-id"] == "req-500"
    counted = samples(client)[
        ("catsdogs_http_requests_total", (("method", "POST"), ("route", path), ("status", "500")))
    ]
    assert counted == 1


def test_the_service_keeps_serving_after_an_internal_error(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(client.app.state.host, "infer", explode)  # type: ignore[attr-defined]
        assert client.post("/predict", files={"file": ("a.jpg", image_bytes(RED))}).status_code == 500
    response = client.post("/predict", files={"file": ("a.jpg", image_bytes(RED))})
    assert response.status_code == 200 and response.json()["predicted_class"] == "cat"
