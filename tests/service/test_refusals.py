"""Refusals as a client and an operator meet them: the route they are logged under, the words
of the detail, and which of them count as rejections."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from service.app import create_app
from service.limits import PayloadTooLarge, readable_size
from service.logs import JsonFormatter
from tests.helpers.service_app import make_settings

MIB = 1024 * 1024


def rejections(client: TestClient) -> dict[str, float]:
    return {
        s.labels["reason"]: s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
        if s.name == "catsdogs_rejections_total"
    }


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "catsdogs.access"]


@pytest.mark.parametrize(
    "path,route",
    [
        ("/predict", "/predict"),
        ("/v2/models/cats-dogs/infer", "/v2/models/{name}/infer"),
        ("/health", "/health"),  # a GET route: the router would answer 405, so it is the route all the same
        ("/no/such/thing", "unmatched"),
    ],
)
def test_a_declared_body_over_the_limit_is_logged_and_counted_under_its_route(
    model_path: Path, caplog: pytest.LogCaptureFixture, path: str, route: str
) -> None:
    with TestClient(create_app(make_settings(model_path, max_upload_bytes=1000))) as small:
        with caplog.at_level(logging.INFO, logger="catsdogs.access"):
            response = small.post(path, content=b"x" * 1001, headers={"content-type": "image/jpeg"})
        metrics = small.get("/metrics").text
    assert response.status_code == 413
    (entry,) = access_lines(caplog)
    assert (entry["route"], entry["status"], entry["rejection"]) == (route, 413, "payload_too_large")
    assert f'catsdogs_http_requests_total{{method="POST",route="{route}",status="413"}} 1.0' in metrics


def test_not_an_image_names_the_accepted_formats(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("notes.txt", b"hello, I am text")})
    assert response.status_code == 415
    assert response.json() == {
        "error": "not_an_image",
        "detail": "the upload is not a recognised image format; send a JPEG, PNG, GIF, BMP or WebP image",
    }


def test_the_upload_limit_reads_in_mib(model_path: Path) -> None:
    with TestClient(create_app(make_settings(model_path, max_upload_bytes=2 * MIB))) as client:
        response = client.post("/predict", content=b"x" * (2 * MIB + 1), headers={"content-type": "image/jpeg"})
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert detail.startswith("the request body exceeds the limit of 2 MiB;"), detail
    assert str(2 * MIB) not in detail


def test_the_default_upload_limit_reads_10_mib() -> None:
    assert "the limit of 10 MiB;" in PayloadTooLarge(10 * MIB).detail


@pytest.mark.parametrize(
    "size,text",
    [
        (10 * MIB, "10 MiB"),
        (MIB, "1 MiB"),
        (1536, "1.5 KiB"),
        (1000, "1000 bytes"),
        (5_000_000, "4.768 MiB"),
        (3 << 30, "3 GiB"),
    ],
)
def test_sizes_read_in_binary_units(size: int, text: str) -> None:
    assert readable_size(size) == text


def test_not_ready_answers_while_loading_are_not_counted_as_overload(model_path: Path) -> None:
    # No `with`: the lifespan never runs, so the model is never loaded.
    loading = TestClient(create_app(make_settings(model_path)))
    assert loading.get("/ready").json()["error"] == "not_ready"
    assert loading.get("/v2/models/cats-dogs/ready").json()["error"] == "model_not_ready"
    assert loading.get("/model").status_code == 503
    assert "overloaded" not in rejections(loading)
