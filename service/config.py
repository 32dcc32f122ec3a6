"""Service settings, read from the environment once at start-up.

Every knob is an environment variable so the same image runs anywhere;
a bad value stops start-up with a message that names the variable and the fix.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from service.cpus import plan
from service.preprocessing import DEFAULT_MAX_PIXELS

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_PATH = REPO_ROOT / "models" / "model.onnx"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A setting that cannot be used; the message says which variable and how to fix it."""


@dataclass(frozen=True)
class Settings:
    model_path: Path = DEFAULT_MODEL_PATH
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    # Measured on 2 cores (benchmarks/bench_service.py): ~250 req/s at c=8 with p99 ~45 ms;
    # 16 admitted keeps queueing near 100 ms at worst, past that an honest 503 beats waiting.
    max_in_flight: int = 16
    max_batch_files: int = 32
    # 0 is `auto`: sized from the CPUs this process may use (service/cpus.py) so that
    # workers x inference threads x intra-op threads never exceeds them.
    workers: int = 0
    inference_threads: int = 0  # per worker: decodes and model calls running at once
    ort_intra_op_threads: int = 0  # per model call
    ort_inter_op_threads: int = 1
    # Slow and idle clients (service/connections.py). A request head, and then its body, must each
    # arrive within read_timeout_s; 30 s still lets a 10 MB upload through at ~350 kB/s.
    read_timeout_s: int = 30
    # Longer than the 60 s idle timeout of common proxies (ingress-nginx upstreams, cloud load
    # balancers), so a proxy never reuses a connection the server is just closing.
    keep_alive_timeout_s: int = 75
    # Past this many open connections new ones get a 503; the ones already admitted are unaffected.
    max_connections: int = 1000
    log_level: str = "INFO"
    admin_token: str | None = None
    model_name: str = "cats-dogs"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()
        level = env.get("LOG_LEVEL", defaults.log_level).strip().upper()
        if level not in _LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL={env['LOG_LEVEL']!r} is not a log level; use one of {', '.join(_LOG_LEVELS)}")
        name = env.get("MODEL_NAME", defaults.model_name).strip()
        if not name or "/" in name:
            raise ConfigError(f"MODEL_NAME={name!r} must be a non-empty name without '/', e.g. MODEL_NAME=cats-dogs")
        return cls(
            model_path=Path(env.get("MODEL_PATH") or defaults.model_path),
            host=env.get("HOST", defaults.host).strip() or defaults.host,
            port=_int(env, "PORT", defaults.port, low=0, high=65535),
            max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", defaults.max_upload_bytes, low=1),
            max_image_pixels=_int(
                env, "MAX_IMAGE_PIXELS", defaults.max_image_pixels, low=1, high=PILLOW_HARD_LIMIT_PIXELS
            ),
            max_in_flight=_int(env, "MAX_IN_FLIGHT", defaults.max_in_flight, low=1),
            max_batch_files=_int(env, "MAX_BATCH_FILES", defaults.max_batch_files, low=1),
            workers=_int(env, "WORKERS", defaults.workers, low=1, auto=True),
            inference_threads=_int(env, "INFERENCE_THREADS", defaults.inference_threads, low=1, auto=True),
            ort_intra_op_threads=_int(env, "ORT_INTRA_OP_THREADS", defaults.ort_intra_op_threads, low=1, auto=True),
            ort_inter_op_threads=_int(env, "ORT_INTER_OP_THREADS", defaults.ort_inter_op_threads, low=0),
            read_timeout_s=_int(env, "READ_TIMEOUT_S", defaults.read_timeout_s, low=1),
            keep_alive_timeout_s=_int(env, "KEEP_ALIVE_TIMEOUT_S", defaults.keep_alive_timeout_s, low=1),
            max_connections=_int(env, "MAX_CONNECTIONS", defaults.max_connections, low=1),
            log_level=level,
            admin_token=env.get("ADMIN_TOKEN") or None,
            model_name=name,
        )

    def sized_for(self, cpus: int) -> Settings:
        """These settings with every `auto` (0) among workers and threads replaced by a number."""
        sized = plan(cpus, self.workers, self.inference_threads, self.ort_intra_op_threads)
        return replace(
            self,
            workers=sized.workers,
            inference_threads=sized.inference_threads,
            ort_intra_op_threads=sized.ort_intra_op_threads,
        )

    @property
    def log_level_number(self) -> int:
        return logging.getLevelNamesMapping()[self.log_level]


# Pillow refuses to open anything larger whatever we allow, so a higher setting would be a promise we break.
PILLOW_HARD_LIMIT_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)


def _int(
    env: Mapping[str, str], name: str, default: int, *, low: int, high: int | None = None, auto: bool = False
) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "" or (auto and raw.strip().lower() == "auto"):
        return default
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        value = None
    bounds = f">= {low}" if high is None else f"between {low} and {high}"
    if auto:
        bounds += " or auto (sized from the CPUs this process may use)"
        default_text = "auto"
    else:
        default_text = str(default)
    if value is None or value < low or (high is not None and value > high):
        raise ConfigError(f"{name}={raw!r} is invalid; set {name} to a whole number {bounds} (default {default_text})")
    return value
