"""The one eval-time preprocessing definition: image bytes -> model input.

Serving, training validation, evaluation and the export parity gate all call
these functions, so what gets measured is what gets served. Torch-free on
purpose: Pillow and numpy only.

    bytes --decode_image--> RGB PIL image --resize_to_input--> uint8 HWC
          --normalize--> float32 NCHW (what the ONNX graph takes)
"""

from __future__ import annotations

import io
import json
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own bomb check only warns below 2x its limit; we enforce ours before decoding.
DEFAULT_MAX_PIXELS = 40_000_000
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


class ImageError(ValueError):
    """An upload that cannot become a model input. `code` is machine-readable."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything needed to turn an image into the model's input tensor.

    Travels inside the ONNX file's metadata (key `preprocessing`), so the
    service never hard-codes it.
    """

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def describe(self) -> dict[str, object]:
        """The spec and how it is applied, as the model file's metadata and GET /model state it."""
        return {
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": "squash-bilinear",
            "layout": "NCHW",
            "scale": "1/255",
        }

    def to_json(self) -> str:
        return json.dumps(self.describe(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PreprocessSpec:
        raw = json.loads(text)
        spec = cls(
            image_size=int(raw["image_size"]),
            mean=tuple(float(v) for v in raw["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in raw["std"]),  # type: ignore[arg-type]
        )
        if spec.image_size <= 0 or len(spec.mean) != 3 or len(spec.std) != 3 or min(spec.std) <= 0:
            raise ValueError(f"invalid preprocessing spec: {text}")
        return spec


def decode_image(data: bytes, *, draft_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode bytes into an upright 8-bit RGB image, or raise ImageError.

    Handles grayscale, CMYK, palette, alpha, 16-bit and EXIF-rotated inputs and
    takes the first frame of animations. `draft_size` lets JPEGs decode at a
    reduced DCT scale that is still at least that size (much faster).
    """
    if not data:
        raise ImageError("empty_file", "the upload is empty; send a JPEG, PNG, GIF, BMP or WebP image")
    try:
        with warnings.catch_warnings():
            # Our max_pixels is the limit users configure and see; Pillow's own is not.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageError("not_an_image", "the upload is not a recognised image format") from exc
    except Image.DecompressionBombError as exc:
        # Pillow refuses sizes over twice its limit before exposing them; its message holds the count.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1))} pixels" if found else "more pixels than Pillow will open"
        raise ImageError("image_too_large", f"image has {pixels}; the limit is {max_pixels} pixels") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("undecodable", f"the image header could not be read: {exc}") from exc

    width, height = img.size  # never 0: Pillow refuses an empty size as unidentified
    if width * height > max_pixels:
        raise ImageError(
            "image_too_large",
            f"image is {width}x{height} ({width * height} pixels); the limit is {max_pixels} pixels",
        )

    try:
        if draft_size is not None and img.format == "JPEG":
            img.draft(None, (draft_size, draft_size))  # None: keep the colour mode, shrink the DCT scale only
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        message = str(exc)
        code = "truncated" if "truncated" in message or isinstance(exc, EOFError) else "undecodable"
        raise ImageError(code, f"the image could not be decoded ({message})") from exc


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in _SIXTEEN_BIT_MODES:
        # convert("RGB") clips 16-bit values at 255; scale to 8 bits instead.
        # 32-bit "I" images are signed: negatives clip to black rather than wrapping round to white.
        wide = np.asarray(img)
        shift = 8 if wide.max() > 255 else 0
        img = Image.fromarray((wide >> shift).clip(0, 255).astype(np.uint8))
    if "transparency" in img.info and img.mode in ("P", "L", "RGB"):
        img = img.convert("RGBA")  # a palette entry or a colour key (PNG tRNS) marks the transparent pixels
    if img.mode == "La":
        img = img.convert("LA")  # premultiplied grey + alpha has no direct conversion to RGBA
    if img.mode in ("RGBA", "LA", "PA", "RGBa"):
        # Transparent pixels carry arbitrary colour; composite on white as viewers do.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def resize_to_input(img: Image.Image, image_size: int) -> np.ndarray:
    """Squash to image_size x image_size, uint8 HWC.

    Squashing (not cropping) matches how the Kaggle images were published:
    originals resized to 200x200 with the aspect ratio dropped.
    """
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)


def normalize(images: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 HWC or NHWC -> float32 NCHW, scaled to [0, 1] and standardised."""
    batch = images[None] if images.ndim == 3 else images
    scale = np.asarray(spec.std, dtype=np.float32) * 255.0
    shift = np.asarray(spec.mean, dtype=np.float32) / np.asarray(spec.std, dtype=np.float32)
    out = batch.astype(np.float32) / scale - shift
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def load_pixels(data: bytes, image_size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """bytes -> uint8 HWC at model resolution. The cache in training stores exactly this."""
    return resize_to_input(decode_image(data, draft_size=image_size, max_pixels=max_pixels), image_size)


def preprocess(data: bytes, spec: PreprocessSpec, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """bytes -> float32 [1, 3, S, S], exactly what the service feeds the model."""
    return normalize(load_pixels(data, spec.image_size, max_pixels=max_pixels), spec)
