"""Schemathesis hooks for test_api_fuzz.py: the API's binary bodies are images.

The spec can only say `format: binary`; the server also needs the bytes to be a picture,
and answers anything else with a documented 415/422. So positive cases upload real images
of every accepted format, which makes "schema-valid requests are accepted" a real check
of the upload paths. Negative cases are left to schemathesis.
"""

from __future__ import annotations

import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image

FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")


@st.composite
def images(draw: st.DrawFn) -> bytes:
    size = (draw(st.integers(1, 96)), draw(st.integers(1, 96)))
    colour = draw(st.tuples(*[st.integers(0, 255)] * 3))
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=draw(st.sampled_from(FORMATS)))
    return buf.getvalue()


schemathesis.openapi.format("binary", images())
schemathesis.openapi.media_type("image/*", images(), aliases=["application/octet-stream"])
