"""Image kinds the issue names: CMYK, grayscale, RGBA, palette, 16-bit, EXIF-rotated, animated GIF."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from service.preprocessing import load_pixels
from tests.helpers.images import BLUE, RED, encoded, image_bytes
from tests.helpers.onnx_models import IMAGE_SIZE


def predict(client: TestClient, data: bytes, name: str = "img") -> dict:  # type: ignore[type-arg]
    response = client.post("/predict", files={"file": (name, data)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert abs(sum(body["probabilities"].values()) - 1.0) < 1e-5
    return body


def test_red_image_is_cat_and_blue_image_is_dog(client: TestClient) -> None:
    assert predict(client, image_bytes(RED))["predicted_class"] == "cat"
    assert predict(client, image_bytes(BLUE))["predicted_class"] == "dog"


def test_cmyk_jpeg_is_converted_to_rgb(client: TestClient) -> None:
    red_cmyk = Image.new("CMYK", (90, 60), (0, 230, 230, 30))
    assert predict(client, encoded(red_cmyk, "JPEG"))["predicted_class"] == "cat"


def test_grayscale_matches_the_same_grey_in_rgb(client: TestClient) -> None:
    grey = predict(client, encoded(Image.new("L", (50, 50), 128), "PNG"))
    rgb = predict(client, encoded(Image.new("RGB", (50, 50), (128, 128, 128)), "PNG"))
    assert grey["probabilities"] == pytest.approx(rgb["probabilities"], abs=1e-6)


def test_palette_png_keeps_its_colours(client: TestClient) -> None:
    palette = Image.new("RGB", (40, 40), BLUE).convert("P", palette=Image.Palette.ADAPTIVE)
    assert palette.mode == "P"
    assert predict(client, encoded(palette, "PNG"))["predicted_class"] == "dog"


def test_rgba_transparent_pixels_are_composited_on_white(client: TestClient) -> None:
    see_through_red = predict(client, encoded(Image.new("RGBA", (40, 40), (*RED, 0)), "PNG"))
    white = predict(client, encoded(Image.new("RGB", (40, 40), (255, 255, 255)), "PNG"))
    opaque_red = predict(client, encoded(Image.new("RGBA", (40, 40), (*RED, 255)), "PNG"))
    assert see_through_red["probabilities"] == pytest.approx(white["probabilities"], abs=1e-6)
    assert opaque_red["predicted_class"] == "cat"


def test_16_bit_png_is_scaled_not_clipped(client: TestClient) -> None:
    wide = Image.fromarray(np.full((30, 30), 128 * 256, dtype=np.uint16))  # 16-bit mid grey
    assert wide.mode.startswith("I;16")
    sixteen = predict(client, encoded(wide, "PNG"))
    eight = predict(client, encoded(Image.new("RGB", (30, 30), (128, 128, 128)), "PNG"))
    assert sixteen["probabilities"] == pytest.approx(eight["probabilities"], abs=1e-6)


def test_animated_gif_uses_the_first_frame(client: TestClient) -> None:
    frames = [Image.new("RGB", (40, 40), RED), Image.new("RGB", (40, 40), BLUE), Image.new("RGB", (40, 40), BLUE)]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2  # Pillow merges the identical blue frames
    assert predict(client, data)["predicted_class"] == "cat"


def _half_red_half_blue(width: int = 80, height: int = 40) -> Image.Image:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = RED
    pixels[:, width // 2 :] = BLUE
    return Image.fromarray(pixels)


@pytest.mark.parametrize(
    "orientation,stored_transpose",
    [
        (3, Image.Transpose.ROTATE_180),
        (6, Image.Transpose.ROTATE_90),  # displayed after a 270-degree turn
        (8, Image.Transpose.ROTATE_270),
    ],
)
def test_exif_rotated_image_gives_the_same_pixels_as_the_upright_one(orientation: int, stored_transpose) -> None:  # type: ignore[no-untyped-def]
    upright = _half_red_half_blue()
    stored = upright.transpose(stored_transpose)
    exif = Image.Exif()
    exif[0x0112] = orientation
    rotated_file = encoded(stored, "PNG", exif=exif.tobytes())
    assert Image.open(io.BytesIO(rotated_file)).size == stored.size
    got = load_pixels(rotated_file, IMAGE_SIZE)
    want = load_pixels(encoded(upright, "PNG"), IMAGE_SIZE)
    assert np.array_equal(got, want)
    assert not np.array_equal(load_pixels(encoded(stored, "PNG"), IMAGE_SIZE), want)  # the tag is what fixed it


def test_exif_rotated_jpeg_is_served(client: TestClient) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    body = predict(client, encoded(Image.new("RGB", (60, 30), RED), "JPEG", exif=exif.tobytes()))
    assert body["predicted_class"] == "cat"


def test_large_jpeg_uses_draft_decoding_and_still_predicts(client: TestClient) -> None:
    big = encoded(Image.new("RGB", (4000, 3000), BLUE), "JPEG")
    assert predict(client, big)["predicted_class"] == "dog"
