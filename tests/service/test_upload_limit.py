"""MAX_UPLOAD_BYTES at its edges: a declared length equal to the limit is read, a chunked body over it
gets the 413 that names the limit, and a refusal on the declared length is counted in the metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
from starlette.testclient import TestClient

from service.app import create_app
from tests.helpers.images import image_bytes
from tests.helpers.prometheus import samples
from tests.helpers.service_app import make_settings, run_limited

DETAIL = (
    "the request body exceeds the limit of 1000 bytes; send a smaller image (or raise MAX_UPLOAD_BYTES on the server)"
)


def test_a_declared_length_equal_to_the_limit_is_read() -> None:
    sent, pulled = anyio.run(run_limited, [b"x" * 5], 5, [(b"content-length", b"5")])
    assert sent[0]["status"] == 200 and pulled == 1


def test_a_chunked_body_over_the_limit_gets_the_413_that_names_the_limit(model_path: Path) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: only the counting receive can stop it
        yield image_bytes()[:600]
        yield b"x" * 600

    with TestClient(create_app(make_settings(model_path, max_upload_bytes=1000))) as small:
        response = small.post("/predict", content=chunks(), headers={"content-type": "image/jpeg"})
    assert "content-length" not in response.request.headers
    assert (response.status_code, response.json()) == (413, {"error": "payload_too_large", "detail": DETAIL})


def test_a_body_refused_on_its_declared_length_is_counted_as_payload_too_large(model_path: Path) -> None:
    with TestClient(create_app(make_settings(model_path, max_upload_bytes=1000))) as small:
        refused = small.post("/predict", content=b"x" * 1001, headers={"content-type": "image/jpeg"})
        assert refused.status_code == 413
        assert samples(small)[("catsdogs_rejections_total", (("reason", "payload_too_large"),))] == 1
