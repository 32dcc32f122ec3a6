"""Test images: solid colours the tiny models classify, their encodings, and a hostile PNG."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image

RED, BLUE = (220, 20, 20), (20, 20, 220)  # onnx_models.build_model says classes[0] for red, classes[1] for blue
REDDISH = (200, 120, 60)  # onnx_models.build_toy_model says cat
BLUISH = (60, 120, 200)  # onnx_models.build_toy_model says dog


def encoded(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def image_bytes(
    color: tuple[int, ...] = RED,
    size: tuple[int, int] = (120, 90),
    fmt: str = "JPEG",
    mode: str = "RGB",
    **save: object,
) -> bytes:
    return encoded(Image.new(mode, size, color), fmt, **save)


def write_image(path: Path, rgb: tuple[int, int, int], size: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), rgb).save(path, quality=95)
    return path


def png_header_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height that compresses to ~100 KB; built row by row, never in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def slow_batch(count: int) -> list[tuple[str, tuple[str, bytes]]]:
    """/predict/batch fields of big solid PNGs: tiny uploads, ~40 ms each to inflate - a request that takes a while."""
    big = image_bytes(RED, size=(2000, 2000), fmt="PNG")
    return [("file", (f"{i}.png", big)) for i in range(count)]
