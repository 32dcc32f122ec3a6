"""decode_image: every refusal with its code and detail, the pixel-limit and size edges, JPEG draft
decoding, and the colour conversions (16- and 32-bit, transparency) worked out by hand.

Called directly, without the app: these are the decoder's own promises, and each one is checked on
a file small enough to build in milliseconds.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.preprocessing import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    _to_rgb,
    decode_image,
    load_pixels,
    resize_to_input,
)
from tests.helpers.images import RED, encoded, image_bytes

WHITE = (255, 255, 255)


def refusal(data: bytes, **kwargs: object) -> tuple[str, str]:
    with pytest.raises(ImageError) as refused:
        decode_image(data, **kwargs)  # type: ignore[arg-type]
    return refused.value.code, refused.value.detail


def pixels(data: bytes) -> np.ndarray:
    img = decode_image(data)
    assert img.mode == "RGB"
    return np.asarray(img)


def test_empty_and_unrecognised_uploads_are_refused_with_their_codes_and_details() -> None:
    assert refusal(b"") == ("empty_file", "the upload is empty; send a JPEG, PNG, GIF, BMP or WebP image")
    assert refusal(b"hello, I am text") == ("not_an_image", "the upload is not a recognised image format")


def test_a_header_cut_short_is_undecodable_and_quotes_pillow() -> None:
    png = image_bytes(fmt="PNG", size=(8, 8))
    assert refusal(png[:16]) == ("undecodable", "the image header could not be read: Truncated File Read")


def test_a_body_cut_short_is_truncated_and_a_smashed_body_is_undecodable() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    jpeg = encoded(Image.fromarray(noise), "JPEG")
    code, detail = refusal(jpeg[: len(jpeg) // 2])  # past the header, inside the scan
    assert code == "truncated"
    assert detail.startswith("the image could not be decoded (image file is truncated")
    png = bytearray(image_bytes(fmt="PNG", size=(64, 64)))
    png[60:80] = b"\xff" * 20  # the header still parses; the IDAT stream does not
    code, detail = refusal(bytes(png))
    assert code == "undecodable"
    assert detail.startswith("the image could not be decoded (") and "truncated" not in detail


def test_the_pixel_limit_is_inclusive() -> None:
    data = image_bytes(size=(40, 30))
    assert decode_image(data, max_pixels=1200).size == (40, 30)
    assert refusal(data, max_pixels=1199) == (
        "image_too_large",
        "image is 40x30 (1200 pixels); the limit is 1199 pixels",
    )


def test_a_bomb_pillow_refuses_without_a_pixel_count_still_names_our_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_fp: object) -> Image.Image:
        raise Image.DecompressionBombError("decompression bomb")

    monkeypatch.setattr(Image, "open", refuse)
    assert refusal(image_bytes()) == (
        "image_too_large",
        f"image has more pixels than Pillow will open; the limit is {DEFAULT_MAX_PIXELS} pixels",
    )


@pytest.mark.parametrize("fmt", ["JPEG", "BMP"])
def test_an_image_declaring_zero_height_is_not_an_image(fmt: str) -> None:
    data = bytearray(image_bytes(fmt=fmt, size=(8, 8)))
    if fmt == "JPEG":
        sof = data.find(b"\xff\xc0")
        data[sof + 5 : sof + 7] = b"\x00\x00"  # SOF0 height
    else:
        data[22:26] = b"\x00\x00\x00\x00"  # BITMAPINFOHEADER height
    assert refusal(bytes(data)) == ("not_an_image", "the upload is not a recognised image format")


@pytest.mark.parametrize("size", [(1, 1), (1, 5), (5, 1)])
def test_one_pixel_wide_or_tall_images_decode(size: tuple[int, int]) -> None:
    assert decode_image(image_bytes(fmt="PNG", size=size)).size == size


def test_jpeg_draft_decodes_at_the_smallest_dct_scale_still_covering_the_draft_size() -> None:
    jpeg = image_bytes(size=(800, 600))
    assert decode_image(jpeg, draft_size=100).size == (200, 150)  # 1/4: 1/8 would be 100x75, under 100
    assert decode_image(jpeg).size == (800, 600)
    assert decode_image(image_bytes(fmt="PNG", size=(800, 600)), draft_size=100).size == (800, 600)


def test_load_pixels_squashes_the_draft_decode_of_a_jpeg_not_the_full_one() -> None:
    noise = np.random.default_rng(1).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    jpeg = encoded(Image.fromarray(noise), "JPEG")
    drafted = resize_to_input(decode_image(jpeg, draft_size=32), 32)
    assert not np.array_equal(drafted, resize_to_input(decode_image(jpeg), 32))  # the two paths differ here
    assert np.array_equal(load_pixels(jpeg, 32), drafted)


def test_a_large_non_jpeg_is_box_reduced_before_the_bilinear_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """PNGs get no draft decode: reducing first resizes a 12 MP one 2.5x faster (12 vs 31 ms), within 3 grey levels."""
    factors = []
    reduce = Image.Image.reduce

    def recording_reduce(img: Image.Image, factor: int | tuple[int, int], **kwargs: object) -> Image.Image:
        factors.append(factor)
        return reduce(img, factor, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "reduce", recording_reduce)
    resized = resize_to_input(Image.new("RGB", (2000, 1500), (10, 200, 30)), 32)
    assert factors and min(np.ravel(factors)) > 1
    assert resized.shape == (32, 32, 3) and resized[0, 0].tolist() == [10, 200, 30]


def test_16_bit_images_holding_only_8_bit_values_are_read_as_8_bit() -> None:
    values = np.array([[0, 1, 128, 255]], dtype=np.uint16)
    got = pixels(encoded(Image.fromarray(values), "PNG"))
    assert got[..., 0].tolist() == [[0, 1, 128, 255]]


@pytest.mark.parametrize(
    ("values", "expected"),
    [([0, 255, 256, 32768, 65535], [0, 0, 1, 128, 255]), ([0, 128, 256], [0, 0, 1])],
    ids=["full-range", "brightest-is-256"],
)
def test_16_bit_images_with_wider_values_are_divided_by_256(values: list[int], expected: list[int]) -> None:
    got = pixels(encoded(Image.fromarray(np.array([values], dtype=np.uint16)), "PNG"))
    assert got[..., 0].tolist() == [expected]


def test_32_bit_images_past_16_bits_saturate_at_white_instead_of_wrapping() -> None:
    values = np.array([[0, 70_000, 16_777_215]], dtype=np.int32)  # >> 8: 0, 273, 65535
    img = Image.fromarray(values)
    assert img.mode == "I"
    got = pixels(encoded(img, "TIFF"))
    assert got[..., 0].tolist() == [[0, 255, 255]]


def test_palette_image_with_a_transparent_index_is_composited_on_white() -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([*RED, 20, 20, 220])
    img.putpixel((1, 0), 1)
    got = pixels(encoded(img, "PNG", transparency=0))  # index 0 (red) is transparent
    assert got.tolist() == [[list(WHITE), [20, 20, 220]]]


def test_grey_with_alpha_is_composited_on_white() -> None:
    img = Image.new("LA", (2, 1))
    img.putpixel((0, 0), (0, 0))  # transparent black
    img.putpixel((1, 0), (0, 255))  # opaque black
    assert pixels(encoded(img, "PNG")).tolist() == [[list(WHITE), [0, 0, 0]]]


def test_palette_with_alpha_tiff_is_composited_on_white() -> None:
    img = Image.new("PA", (2, 1))
    img.putpalette([*RED, 20, 20, 220])
    img.putpixel((0, 0), (0, 0))  # transparent red
    img.putpixel((1, 0), (1, 255))  # opaque blue
    data = encoded(img, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "PA"
    assert pixels(data).tolist() == [[list(WHITE), [20, 20, 220]]]


def test_negative_32_bit_values_are_black_not_wrapped_round_to_white() -> None:
    img = Image.fromarray(np.array([[-5, 0, 200]], dtype=np.int32))
    assert img.mode == "I"
    assert pixels(encoded(img, "TIFF"))[..., 0].tolist() == [[0, 0, 200]]


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_a_png_colour_key_marks_transparent_pixels_composited_on_white(mode: str) -> None:
    key = 7 if mode == "L" else (7, 8, 9)
    kept = 50 if mode == "L" else (50, 60, 70)
    img = Image.new(mode, (2, 1), key)
    img.putpixel((1, 0), kept)
    got = pixels(encoded(img, "PNG", transparency=key))
    assert got[0, 0].tolist() == list(WHITE)
    assert got[0, 1].tolist() == ([50, 50, 50] if mode == "L" else [50, 60, 70])


def test_premultiplied_grey_with_alpha_is_composited_on_white_not_refused() -> None:
    img = Image.new("LA", (2, 1))
    img.putpixel((0, 0), (0, 0))  # transparent
    img.putpixel((1, 0), (0, 255))  # opaque black
    premultiplied = img.convert("La")
    assert premultiplied.mode == "La"  # no file format stores it; TIFF readers can produce it
    assert np.asarray(_to_rgb(premultiplied)).tolist() == [[list(WHITE), [0, 0, 0]]]


def test_premultiplied_rgb_with_alpha_is_composited_on_white() -> None:
    img = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    img.putpixel((1, 0), (10, 20, 30, 255))
    premultiplied = img.convert("RGBa")  # no file format stores it; plugins and callers can hand it over
    assert np.asarray(_to_rgb(premultiplied)).tolist() == [[list(WHITE), [10, 20, 30]]]


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_an_opaque_image_is_not_passed_through_alpha_compositing(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every JPEG takes this path: compositing an image with no transparency only costs time."""
    composited = []
    monkeypatch.setattr(Image, "alpha_composite", lambda *args: composited.append(args))
    img = Image.new(mode, (3, 2), 90)
    rgb = _to_rgb(img)
    assert composited == []
    assert rgb is img if mode == "RGB" else rgb.mode == "RGB"
