"""Settings from the environment, and the streaming upload limit at the ASGI level."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import DEFAULT_MODEL_PATH, ConfigError, Settings
from service.preprocessing import DEFAULT_MAX_PIXELS
from tests.helpers.service_app import run_limited


def test_defaults_serve_the_bundled_model_on_localhost() -> None:
    settings = Settings.from_env({})
    assert settings.model_path == DEFAULT_MODEL_PATH == Path(__file__).resolve().parents[2] / "models/model.onnx"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.max_upload_bytes == 10 * 1024 * 1024
    assert settings.max_image_pixels == DEFAULT_MAX_PIXELS
    assert settings.admin_token is None and settings.model_name == "cats-dogs"


def test_every_variable_is_read() -> None:
    env = {
        "MODEL_PATH": "/m/x.onnx",
        "HOST": "0.0.0.0",
        "PORT": "9000",
        "MAX_UPLOAD_BYTES": "2048",
        "MAX_IMAGE_PIXELS": "1_000_000",
        "MAX_IN_FLIGHT": "3",
        "MAX_BATCH_FILES": "5",
        "WORKERS": "3",
        "INFERENCE_THREADS": "4",
        "ORT_INTRA_OP_THREADS": "2",
        "ORT_INTER_OP_THREADS": "1",
        "LOG_LEVEL": "debug",
        "ADMIN_TOKEN": "t",
        "MODEL_NAME": "pets",
        "READ_TIMEOUT_S": "7",
        "KEEP_ALIVE_TIMEOUT_S": "9",
        "MAX_CONNECTIONS": "50",
    }
    s = Settings.from_env(env)
    assert s == Settings(
        model_path=Path("/m/x.onnx"),
        host="0.0.0.0",
        port=9000,
        max_upload_bytes=2048,
        max_image_pixels=1_000_000,
        max_in_flight=3,
        max_batch_files=5,
        workers=3,
        inference_threads=4,
        ort_intra_op_threads=2,
        ort_inter_op_threads=1,
        read_timeout_s=7,
        keep_alive_timeout_s=9,
        max_connections=50,
        log_level="DEBUG",
        admin_token="t",
        model_name="pets",
    )


@pytest.mark.parametrize(
    "name,value",
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("MAX_UPLOAD_BYTES", "0"),
        ("MAX_IN_FLIGHT", "-1"),
        ("ORT_INTRA_OP_THREADS", "1.5"),
        ("WORKERS", "0"),
        ("WORKERS", "many"),
        ("INFERENCE_THREADS", "-2"),
        ("LOG_LEVEL", "loud"),
        ("MODEL_NAME", "a/b"),
        ("MAX_IMAGE_PIXELS", "x"),
        ("READ_TIMEOUT_S", "0"),
        ("KEEP_ALIVE_TIMEOUT_S", "soon"),
        ("MAX_CONNECTIONS", "0"),
    ],
)
def test_invalid_values_name_the_variable_and_the_fix(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    assert name in str(info.value)
    assert any(word in str(info.value) for word in ("set", "use", "must"))


def test_streamed_body_over_the_limit_stops_reading_at_the_limit() -> None:
    import anyio

    chunks = [b"x" * 1000] * 100  # 100 KB, chunked: no Content-Length
    sent, pulled = anyio.run(run_limited, chunks, 5_000, [])
    assert sent == ["raised 413"]
    assert pulled == 6  # stopped at the first chunk past 5 000 bytes, never read the rest


def test_declared_content_length_over_the_limit_is_refused_unread() -> None:
    import anyio

    sent, pulled = anyio.run(run_limited, [b"x" * 10], 5, [(b"content-length", b"10")])
    assert pulled == 0
    assert sent[0]["status"] == 413


def test_body_within_the_limit_passes() -> None:
    import anyio

    sent, pulled = anyio.run(run_limited, [b"x" * 100] * 3, 300, [])
    assert sent[0]["status"] == 200 and pulled == 3


def test_max_image_pixels_above_pillows_hard_limit_is_refused_naming_the_range() -> None:
    # Pillow will not open more than 178,956,970 pixels, so a larger setting could never be honoured.
    assert Settings.from_env({"MAX_IMAGE_PIXELS": "178956970"}).max_image_pixels == 178_956_970
    with pytest.raises(ConfigError, match="MAX_IMAGE_PIXELS.*between 1 and 178956970"):
        Settings.from_env({"MAX_IMAGE_PIXELS": "300000000"})
