"""Owns the live model: first load, hot reload (validate, then swap) and off-loop execution."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
import numpy as np

from service.config import Settings
from service.metrics import Metrics
from service.model import ModelError, OnnxModel, SessionTuning, load_model

log = logging.getLogger("catsdogs.model")
T = TypeVar("T")


class ModelHost:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.tuning = SessionTuning(settings.ort_intra_op_threads, settings.ort_inter_op_threads)
        self._model: OnnxModel | None = None
        self._reload_lock = anyio.Lock()
        # CPU-bound work (decode + ORT) runs on at most this many threads: more than
        # the cores only adds contention; everything else waits inside MAX_IN_FLIGHT.
        # A plain executor: its hand-off costs ~125 us against ~200 us for anyio.to_thread.
        self.workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="inference")

    def close(self) -> None:
        """After the server has drained: let queued inference finish, then stop the threads."""
        self.workers.shutdown(wait=True)

    @property
    def model(self) -> OnnxModel:
        if self._model is None:
            raise ModelError("the model is not loaded yet")
        return self._model

    @property
    def ready(self) -> bool:
        return self._model is not None

    async def run(self, fn: Callable[[], T]) -> T:
        """Run CPU-bound work off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.workers, fn)

    def infer(self, model: OnnxModel, batch: np.ndarray) -> np.ndarray:
        """Timed model call; meant to run inside `run`."""
        start = time.perf_counter()
        probs = model.predict(batch)
        self.metrics.inference_duration.observe(time.perf_counter() - start)
        return probs

    async def load(self) -> OnnxModel:
        """Start-up load: failure is fatal (raised), since there is nothing to fall back to."""
        start = time.perf_counter()
        model = await anyio.to_thread.run_sync(load_model, self.settings.model_path, self.tuning)
        self._install(model)
        log.info("model loaded", extra=_describe(model) | {"load_ms": round((time.perf_counter() - start) * 1000, 1)})
        return model

    async def reload(self, path: Path | None = None) -> OnnxModel:
        """Load and validate the new model, then swap. On failure the old model keeps serving."""
        path = path or self.settings.model_path
        async with self._reload_lock:
            previous = self._model
            try:
                model = await anyio.to_thread.run_sync(load_model, path, self.tuning)
            except ModelError as exc:
                self.metrics.reloads.labels(result="failure").inc()
                log.error(
                    "model reload failed; still serving the previous model",
                    extra={
                        "path": str(path),
                        "reason": str(exc),
                        "model_version": previous.metadata.model_version if previous else None,
                    },
                )
                raise
            self._install(model)  # one reference assignment: requests already running keep their model
            self.metrics.reloads.labels(result="success").inc()
            log.info(
                "model reloaded",
                extra=_describe(model) | {"previous_version": previous.metadata.model_version if previous else None},
            )
            return model

    def _install(self, model: OnnxModel) -> None:
        self._model = model
        self.metrics.set_model(model.metadata.model_version, model.metadata.data_version)


def _describe(model: OnnxModel) -> dict[str, object]:
    return {
        "path": str(model.path),
        "model_version": model.metadata.model_version,
        "data_version": model.metadata.data_version,
        "classes": list(model.classes),
        "sha256": model.sha256[:12],
    }
