"""Prometheus metrics after requests, and the JSON access log line (ASGI client)."""

from __future__ import annotations

import json
import logging

import pytest
from starlette.testclient import TestClient

from service.logs import JsonFormatter
from tests.helpers.images import RED, image_bytes
from tests.helpers.prometheus import samples


def test_metrics_count_requests_by_route_template_and_status(client: TestClient) -> None:
    client.post("/predict", files={"file": ("a.jpg", image_bytes(RED))})
    client.post("/predict", files={"file": ("a.jpg", b"text")})
    client.get("/v2/models/cats-dogs/ready")
    client.get("/v2/models/other/ready")
    got = samples(client)
    key = "catsdogs_http_requests_total"
    assert got[(key, (("method", "POST"), ("route", "/predict"), ("status", "200")))] == 1
    assert got[(key, (("method", "POST"), ("route", "/predict"), ("status", "415")))] == 1
    # Both model names land on the template, never the raw path.
    assert got[(key, (("method", "GET"), ("route", "/v2/models/{name}/ready"), ("status", "200")))] == 1
    assert got[(key, (("method", "GET"), ("route", "/v2/models/{name}/ready"), ("status", "404")))] == 1
    assert not any("other" in dict(labels).get("route", "") for _, labels in got)
    assert got[("catsdogs_http_request_duration_seconds_count", (("route", "/predict"),))] == 2
    assert got[("catsdogs_http_request_duration_seconds_bucket", (("le", "+Inf"), ("route", "/predict")))] == 2


def test_prediction_metrics_record_class_confidence_and_image_size(client: TestClient) -> None:
    for _ in range(3):
        client.post("/predict", files={"file": ("a.jpg", image_bytes(RED, size=(100, 50)))})
    got = samples(client)
    assert got[("catsdogs_predictions_total", (("predicted_class", "cat"),))] == 3
    assert got[("catsdogs_prediction_confidence_count", ())] == 3
    assert got[("catsdogs_inference_duration_seconds_count", ())] >= 3
    assert got[("catsdogs_input_image_pixels_sum", ())] == 3 * 100 * 50
    assert got[("catsdogs_input_image_bytes_count", ())] == 3
    assert got[("catsdogs_model_info", (("data_version", "data-test"), ("model_version", "v1")))] == 1
    assert got[("catsdogs_http_requests_in_flight", ())] == 1  # the /metrics request itself


def test_rejections_are_counted_by_reason(client: TestClient) -> None:
    client.post("/predict", files={"file": ("a.jpg", b"")})  # 400
    client.post("/predict", files={"file": ("a.jpg", b"text")})  # 415
    client.post("/predict", files={"file": ("a.jpg", image_bytes()[:100])})  # 422
    client.post("/predict/batch", files=[("file", ("ok.jpg", image_bytes())), ("file", ("bad.jpg", b"txt"))])
    got = samples(client)
    assert got[("catsdogs_rejections_total", (("reason", "bad_request"),))] == 1
    assert got[("catsdogs_rejections_total", (("reason", "unsupported_media"),))] == 2
    assert got[("catsdogs_rejections_total", (("reason", "unprocessable"),))] == 1


def test_each_app_has_its_own_registry(model_path, client: TestClient) -> None:  # type: ignore[no-untyped-def]
    from service.app import create_app
    from tests.helpers.service_app import make_settings

    client.post("/predict", files={"file": ("a.jpg", image_bytes())})
    with TestClient(create_app(make_settings(model_path))) as other:
        fresh = samples(other)
    assert ("catsdogs_predictions_total", (("predicted_class", "cat"),)) not in fresh


def test_one_json_access_line_per_request_without_image_bytes(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    data = image_bytes(RED, size=(77, 33))
    with caplog.at_level(logging.INFO, logger="catsdogs.access"):
        client.post("/predict", files={"file": ("a.jpg", data)}, headers={"X-Request-ID": "trace-42"})
    (record,) = [r for r in caplog.records if r.name == "catsdogs.access"]
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["request_id"] == "trace-42"
    assert entry["route"] == "/predict" and entry["method"] == "POST" and entry["status"] == 200
    assert entry["predicted_class"] == "cat" and 0.5 < entry["confidence"] <= 1
    assert entry["image_bytes"] == len(data)
    assert (entry["image_width"], entry["image_height"]) == (77, 33)
    assert len(entry["image_sha256"]) == 12
    assert entry["latency_ms"] > 0
    assert data.hex()[:40] not in line and "\\xff\\xd8" not in line


def test_access_line_for_a_rejected_request_carries_the_status(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="catsdogs.access"):
        client.post("/predict", files={"file": ("a.jpg", b"nope")})
    (record,) = [r for r in caplog.records if r.name == "catsdogs.access"]
    entry = json.loads(JsonFormatter().format(record))
    assert entry["status"] == 415 and entry["rejection"] == "unsupported_media"
