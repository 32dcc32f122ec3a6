"""Every bad input in the issue gets a JSON {"error","detail"} with the right status, never a 500."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from tests.helpers.images import image_bytes, png_header_bomb


def assert_error(response, status: int, code: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["detail"] and isinstance(body["detail"], str)
    if code is not None:
        assert body["error"] == code
    return body


def noisy_jpeg(size: tuple[int, int] = (500, 375)) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_empty_multipart_upload_is_400(client: TestClient) -> None:
    assert_error(client.post("/predict", files={"file": ("empty.jpg", b"", "image/jpeg")}), 400, "empty_file")


def test_zero_byte_raw_body_is_400(client: TestClient) -> None:
    assert_error(client.post("/predict", content=b"", headers={"content-type": "image/jpeg"}), 400, "empty_file")


def test_missing_file_field_is_400_and_names_the_field(client: TestClient) -> None:
    body = assert_error(client.post("/predict", files={"image": ("a.jpg", image_bytes())}), 400, "missing_field")
    assert "'file'" in body["detail"]


def test_text_field_instead_of_file_is_400(client: TestClient) -> None:
    response = client.post("/predict", data={"file": "not a file"}, files={"other": ("a.jpg", image_bytes())})
    assert_error(response, 400, "missing_field")


def test_text_renamed_jpg_is_415(client: TestClient) -> None:
    assert_error(
        client.post("/predict", files={"file": ("cat.jpg", b"hello, I am text", "image/jpeg")}), 415, "not_an_image"
    )


def test_not_an_image_raw_body_is_415(client: TestClient) -> None:
    assert_error(client.post("/predict", content=b"%PDF-1.4 ...", headers={"content-type": "image/png"}), 415)


def test_unsupported_content_type_is_415_with_a_hint(client: TestClient) -> None:
    body = assert_error(client.post("/predict", json={"image": "x"}), 415, "unsupported_media")
    assert "curl -F file=@" in body["detail"]


def test_truncated_jpeg_is_422(client: TestClient) -> None:
    data = noisy_jpeg()
    assert_error(client.post("/predict", files={"file": ("t.jpg", data[: len(data) // 2])}), 422, "truncated")


def test_corrupt_png_body_is_422(client: TestClient) -> None:
    data = bytearray(image_bytes(fmt="PNG", size=(64, 64)))
    data[60:80] = b"\xff" * 20  # smash the IDAT stream; the header still parses
    assert_error(client.post("/predict", files={"file": ("c.png", bytes(data))}), 422)


def test_malformed_multipart_is_400(client: TestClient) -> None:
    response = client.post("/predict", content=b"--nope\r\ngarbage", headers={"content-type": "multipart/form-data"})
    assert_error(response, 400)


def test_two_files_in_single_predict_is_400(client: TestClient) -> None:
    files = [("file", ("a.jpg", image_bytes())), ("file", ("b.jpg", image_bytes()))]
    assert_error(client.post("/predict", files=files), 400)


def test_decompression_bomb_30000x30000_png_is_refused_fast(client: TestClient) -> None:
    bomb = png_header_bomb(30_000, 30_000)
    assert len(bomb) < 1_000_000
    start = time.perf_counter()
    body = assert_error(client.post("/predict", files={"file": ("bomb.png", bomb)}), 422, "image_too_large")
    assert time.perf_counter() - start < 2.0
    assert "pixels" in body["detail"] or "limit" in body["detail"]


def test_image_over_max_image_pixels_is_refused_before_decoding(client: TestClient) -> None:
    bomb = png_header_bomb(8_000, 8_000)  # 64 M pixels: under Pillow's own limit, over ours (40 M)
    start = time.perf_counter()
    body = assert_error(client.post("/predict", files={"file": ("big.png", bomb)}), 422, "image_too_large")
    assert time.perf_counter() - start < 1.0
    assert "8000x8000" in body["detail"]


# Pillow's own limit; the service's MAX_IMAGE_PIXELS is the only limit a client should ever read.
PILLOW_LIMIT = "89478485"


@pytest.fixture
def limited_client(model_path) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """MAX_IMAGE_PIXELS set through the environment to a value that is neither ours nor Pillow's default."""
    from service.app import create_app
    from service.config import Settings

    settings = Settings.from_env({"MODEL_PATH": str(model_path), "MAX_IMAGE_PIXELS": "12_345_678"})
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize("route", ["/predict", "/predict/batch"])
def test_10000x10000_png_quotes_max_image_pixels_not_pillows_limit(limited_client: TestClient, route: str) -> None:
    bomb = png_header_bomb(10_000, 10_000)  # over Pillow's limit, under twice it: Pillow only warns
    response = limited_client.post(route, files={"file": ("big.png", bomb)})
    detail = image_too_large_detail(response)
    assert detail == "image is 10000x10000 (100000000 pixels); the limit is 12345678 pixels"
    assert PILLOW_LIMIT not in detail.replace(",", "")


@pytest.mark.parametrize("route", ["/predict", "/predict/batch"])
def test_30000x30000_png_quotes_max_image_pixels_not_pillows_limit(limited_client: TestClient, route: str) -> None:
    bomb = png_header_bomb(30_000, 30_000)  # over twice Pillow's limit: Pillow refuses it before we see the size
    response = limited_client.post(route, files={"file": ("bomb.png", bomb)})
    detail = image_too_large_detail(response)
    assert detail == "image has 900000000 pixels; the limit is 12345678 pixels"
    assert PILLOW_LIMIT not in detail.replace(",", "")


def image_too_large_detail(response) -> str:  # type: ignore[no-untyped-def]
    """The 422 image_too_large detail, whether the route answers for one image or per file of a batch."""
    if response.status_code == 200:  # /predict/batch: one result entry per file, each with its own status
        (entry,) = response.json()["results"]
        assert (entry["status"], entry["error"]) == (422, "image_too_large"), entry
        return str(entry["detail"])
    return str(assert_error(response, 422, "image_too_large")["detail"])


def test_upload_over_content_length_limit_is_413(model_path) -> None:  # type: ignore[no-untyped-def]
    from service.app import create_app
    from tests.helpers.service_app import make_settings

    with TestClient(create_app(make_settings(model_path, max_upload_bytes=1000))) as small:
        body = assert_error(
            small.post("/predict", content=b"x" * 1001, headers={"content-type": "image/jpeg"}),
            413,
            "payload_too_large",
        )
        assert "MAX_UPLOAD_BYTES" in body["detail"]
        assert (
            small.post("/predict", content=image_bytes(size=(8, 8)), headers={"content-type": "image/jpeg"}).status_code
            == 200
        )


def test_batch_without_files_is_400(client: TestClient) -> None:
    assert_error(client.post("/predict/batch", files={"other": ("a.jpg", image_bytes())}), 400, "missing_field")


def test_batch_takes_only_the_file_field_name_the_spec_documents(client: TestClient) -> None:
    body = assert_error(client.post("/predict/batch", files={"files": ("a.jpg", image_bytes())}), 400, "missing_field")
    assert "-F file=@a.jpg" in body["detail"] and "['files']" in body["detail"]


def test_batch_with_a_text_file_field_is_400_not_a_per_file_result(client: TestClient) -> None:
    response = client.post("/predict/batch", data={"file": "{}"}, files={"file": ("a.jpg", image_bytes())})
    assert "text, not a file upload" in assert_error(response, 400, "missing_field")["detail"]


def test_batch_over_file_cap_is_413(model_path) -> None:  # type: ignore[no-untyped-def]
    from service.app import create_app
    from tests.helpers.service_app import make_settings

    with TestClient(create_app(make_settings(model_path, max_batch_files=3))) as small:
        files = [("file", (f"{i}.jpg", image_bytes(size=(8, 8)))) for i in range(4)]
        assert_error(small.post("/predict/batch", files=files), 413, "too_many_files")


def test_batch_with_raw_body_is_415(client: TestClient) -> None:
    assert_error(client.post("/predict/batch", content=image_bytes(), headers={"content-type": "image/jpeg"}), 415)


@pytest.mark.parametrize("path", ["/predict", "/predict/batch", "/v2/models/cats-dogs/infer"])
def test_get_on_post_endpoints_is_405_json(client: TestClient, path: str) -> None:
    assert_error(client.get(path), 405, "method_not_allowed")


def test_unknown_path_is_404_json(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
