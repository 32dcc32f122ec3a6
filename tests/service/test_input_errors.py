"""Bad input is refused at the right boundary with a detail that says what was wrong and the fix.

The details are checked word for word: they are the API's answer to a client's mistake, and a
detail that lost its hint (or became null) is a regression even when the status is right.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.preprocessing import ImageError, PreprocessSpec, preprocess
from tests.helpers.images import RED, image_bytes
from tests.helpers.service_app import make_settings
from tests.helpers.v2_requests import binary_request, infer_request, tensor

INFER = "/v2/models/cats-dogs/infer"
HINT = "send inputs=[{'name':'image','datatype':'FP32','shape':[N,3,32,32],'data':[...]}]"


def error(response) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    return response.status_code, body["error"], body["detail"]


@pytest.mark.parametrize(
    "mutate,code,detail",
    [
        (lambda r: r.update(inputs=[]), "invalid_inputs", f"expected exactly one input tensor, got 0; {HINT}"),
        (lambda r: r["inputs"][0].update(name="pixels"), "unknown_input", f"unknown input 'pixels'; {HINT}"),
        (
            lambda r: r["inputs"][0].update(datatype="INT8"),
            "invalid_datatype",
            f"datatype 'INT8' is not supported; {HINT}",
        ),
        (
            lambda r: r["inputs"][0].update(shape=[2, 3, 32, 32]),
            "invalid_shape",
            "'data' holds 3072 values but shape [2, 3, 32, 32] needs 6144",
        ),
        (lambda r: r["inputs"][0].pop("data"), "missing_data", f"input 'image' has no 'data'; {HINT}"),
        (
            lambda r: r.update(inputs={"image": 1}),
            "invalid_request",
            "the body must be a JSON object with an 'inputs' list",
        ),
    ],
)
def test_v2_tensor_errors_say_what_was_wrong_and_how_to_send_it(
    client: TestClient, mutate, code: str, detail: str
) -> None:  # type: ignore[no-untyped-def]
    request = infer_request(tensor([RED]))
    mutate(request)
    assert error(client.post(INFER, json=request)) == (400, code, detail)


@pytest.mark.parametrize(
    "shape",
    [None, "1,3,32,32", 4, [1, 3, 32, 32, 1], [1.0, 3, 32, 32], [True, 3, 32, 32], [1, 3, 32, 32.0]],
    ids=["null", "string", "int", "five-dims", "float-batch", "bool-batch", "float-side"],
)
def test_v2_shapes_that_are_not_four_whole_numbers_are_400(client: TestClient, shape: object) -> None:
    request = infer_request(tensor([RED]))
    request["inputs"][0]["shape"] = shape
    status, code, detail = error(client.post(INFER, json=request))
    assert (status, code) == (400, "invalid_shape")
    assert detail == f"shape {shape!r} is not [N,3,32,32] with 1 <= N <= 32; {HINT}"


def test_v2_batch_cap_is_inclusive(model_path) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(make_settings(model_path, max_batch_files=3))) as capped:
        assert capped.post(INFER, json=infer_request(tensor([RED] * 3))).status_code == 200
        status, code, _ = error(capped.post(INFER, json=infer_request(tensor([RED] * 4))))
        assert (status, code) == (400, "invalid_shape")


def test_v2_non_json_body_names_the_parse_error(client: TestClient) -> None:
    status, code, detail = error(client.post(INFER, content=b"{not json", headers={"content-type": "application/json"}))
    assert (status, code) == (400, "invalid_json")
    assert detail.startswith("the body is not JSON (") and detail.endswith("); send an inference request object")


def test_v2_non_numbers_name_the_fix(client: TestClient) -> None:
    request = infer_request(tensor([RED]))
    request["inputs"][0]["data"] = ["a"] * 3072
    status, code, detail = error(client.post(INFER, json=request))
    assert (status, code) == (400, "invalid_data")
    assert detail.startswith("'data' must hold numbers only, flat or nested (")


def test_v2_non_finite_detail_names_the_value_and_the_fix(client: TestClient) -> None:
    batch = tensor([RED])
    batch[0, 0, 0, 2] = np.nan
    body, headers = binary_request(batch)
    assert error(client.post(INFER, content=body, headers=headers)) == (
        400,
        "invalid_data",
        "'data' holds 1 non-finite values (value #2 is nan); NaN, infinity and numbers beyond the FP32 range "
        "are not pixels: send finite normalised pixel values",
    )


def test_v2_binary_size_mismatch_says_how_many_bytes_the_shape_needs(client: TestClient) -> None:
    body, headers = binary_request(tensor([RED]))
    assert error(client.post(INFER, content=body[:-4], headers=headers)) == (
        400,
        "invalid_binary",
        "binary_data_size is 12288 and 12284 bytes follow the JSON, but the shape needs exactly 12288 bytes "
        "of little-endian float32",
    )
    head = json.dumps(infer_request(tensor([RED]))).encode()
    stray = client.post(INFER, content=head + b"\0" * 8, headers={"Inference-Header-Content-Length": str(len(head))})
    assert error(stray) == (400, "invalid_binary", "8 bytes follow the JSON but no input declares them")


def test_v2_header_length_may_cover_the_whole_body_but_not_more(client: TestClient) -> None:
    """Clients send the header even for all-JSON requests: its length is then the body's length."""
    head = json.dumps(infer_request(tensor([RED]))).encode()
    whole = client.post(INFER, content=head, headers={"Inference-Header-Content-Length": str(len(head))})
    assert whole.status_code == 200, whole.text
    over = client.post(INFER, content=head, headers={"Inference-Header-Content-Length": str(len(head) + 1)})
    assert error(over) == (
        400,
        "invalid_header",
        f"Inference-Header-Content-Length is '{len(head) + 1}' but the body has {len(head)} bytes; "
        "it must give the length of the JSON part that starts the body",
    )
    one = client.post(INFER, content=head, headers={"Inference-Header-Content-Length": "1"})
    assert error(one)[:2] == (400, "invalid_json"), "a 1-byte JSON part is a length the protocol allows"


def test_batch_cap_is_inclusive_and_raw_bodies_are_refused_by_code(model_path) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(make_settings(model_path, max_batch_files=3))) as capped:
        three = [("file", (f"{i}.jpg", image_bytes(size=(8, 8)))) for i in range(3)]
        assert capped.post("/predict/batch", files=three).status_code == 200
        raw = capped.post("/predict/batch", content=image_bytes(), headers={"content-type": "image/jpeg"})
        status, code, detail = error(raw)
        assert (status, code) == (415, "unsupported_media")
        assert detail.startswith("/predict/batch takes multipart/form-data; send up to 3 images")


def test_payload_over_the_limit_closes_the_connection_and_names_the_setting(model_path) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(make_settings(model_path, max_upload_bytes=1000))) as small:
        response = small.post("/predict", content=b"x" * 1001, headers={"content-type": "image/jpeg"})
    assert error(response) == (
        413,
        "payload_too_large",
        "the request body exceeds the limit of 1000 bytes; "
        "send a smaller image (or raise MAX_UPLOAD_BYTES on the server)",
    )
    assert response.headers["connection"] == "close"


def test_preprocess_applies_the_pixel_limit_it_is_given() -> None:
    spec = PreprocessSpec(image_size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    with pytest.raises(ImageError) as refused:
        preprocess(image_bytes(size=(40, 30)), spec, max_pixels=1199)
    assert refused.value.code == "image_too_large"
    assert preprocess(image_bytes(size=(40, 30)), spec, max_pixels=1200).shape == (1, 3, 8, 8)


def test_predict_without_a_content_type_is_415_naming_none(client: TestClient) -> None:
    assert error(client.post("/predict", content=image_bytes())) == (
        415,
        "unsupported_media",
        "Content-Type '(none)' is not accepted; send multipart/form-data with the image in field 'file' "
        "(curl -F file=@cat.jpg) or a raw image/* body",
    )


def test_empty_upload_detail_lists_the_accepted_formats(client: TestClient) -> None:
    response = client.post("/predict", content=b"", headers={"content-type": "image/png"})
    assert error(response) == (400, "empty_file", "the upload is empty; send a JPEG, PNG, GIF, BMP or WebP image")


@pytest.mark.parametrize("extra,status", [(16, 200), (17, 400)])
def test_single_upload_form_takes_at_most_16_text_fields(client: TestClient, extra: int, status: int) -> None:
    fields = {f"note{i}": "x" for i in range(extra)}
    response = client.post("/predict", files={"file": ("a.jpg", image_bytes(RED))}, data=fields)
    assert response.status_code == status, response.text


@pytest.mark.parametrize("files,status", [(4, 413), (5, 400)])
def test_batch_parser_reads_at_most_one_file_over_the_cap(model_path, files: int, status: int) -> None:  # type: ignore[no-untyped-def]
    """One over the cap is a clear 413; past that the parser stops reading (400) instead of buffering them all."""
    with TestClient(create_app(make_settings(model_path, max_batch_files=3))) as capped:
        upload = [("file", (f"{i}.jpg", image_bytes(size=(8, 8)))) for i in range(files)]
        assert capped.post("/predict/batch", files=upload).status_code == status


@pytest.mark.parametrize("extra,status", [(19, 200), (20, 400)])
def test_batch_form_takes_at_most_cap_plus_16_text_fields(model_path, extra: int, status: int) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(make_settings(model_path, max_batch_files=3))) as capped:
        fields = {f"note{i}": "x" for i in range(extra)}
        response = capped.post("/predict/batch", files=[("file", ("a.jpg", image_bytes(RED)))], data=fields)
        assert response.status_code == status, response.text


def test_max_image_pixels_setting_reaches_the_decoder(model_path) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(make_settings(model_path, max_image_pixels=1199))) as strict:
        refused = strict.post("/predict", files={"file": ("a.jpg", image_bytes(size=(40, 30)))})
        assert error(refused)[:2] == (422, "image_too_large")
        assert "40x30 (1200 pixels); the limit is 1199 pixels" in error(refused)[2]


def test_image_error_carries_its_detail_as_the_exception_message() -> None:
    assert str(ImageError("truncated", "the image could not be decoded (x)")) == "the image could not be decoded (x)"
