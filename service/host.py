"""Owns the live model: first load, hot reload (validate, then swap) and off-loop execution.

With several worker processes (a `Fleet`), the worker that takes a reload leads it: it validates
the file, stages it as the next generation, waits until every worker serves it, and rolls every
worker back if any cannot. The others follow the generation file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
import numpy as np

from service.config import Settings
from service.cpus import usable_cpus
from service.fleet import Generation, WorkerRole
from service.metrics import Metrics
from service.model import ModelError, OnnxModel, SessionTuning, model_from_bytes, read_model_file

log = logging.getLogger("catsdogs.model")
T = TypeVar("T")
FOLLOW_INTERVAL_S = 0.1  # how often a worker looks for a new generation: 10 small reads a second
ROLL_OUT_TIMEOUT_S = 60.0  # a worker restarting mid-roll-out loads in seconds; past this it is stuck


class ModelHost:
    def __init__(self, settings: Settings, metrics: Metrics, role: WorkerRole | None = None) -> None:
        settings = settings.sized_for(usable_cpus())  # a no-op when the supervisor already sized them
        self.settings = settings
        self.metrics = metrics
        self.role = role
        self.tuning = SessionTuning(settings.ort_intra_op_threads, settings.ort_inter_op_threads)
        self._model: OnnxModel | None = None
        self._generation: Generation | None = None  # with a fleet: the generation this worker serves
        self._leading = False
        self._reload_lock = anyio.Lock()
        # CPU-bound work (decode + ORT) runs on at most this many threads: more than this
        # worker's share of the cores only adds contention; the rest waits inside MAX_IN_FLIGHT.
        # A plain executor: its hand-off costs ~125 us against ~200 us for anyio.to_thread.
        self.workers = ThreadPoolExecutor(max_workers=settings.inference_threads, thread_name_prefix="inference")

    def close(self) -> None:
        """After the server has drained: let queued inference finish, then stop the threads."""
        self.workers.shutdown(wait=True)

    @property
    def model(self) -> OnnxModel:
        if self._model is None:
            raise ModelError("the model is not loaded yet")
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def ready(self) -> bool:
        """This worker has its model and, with several workers, every worker had its own."""
        return self._model is not None and (self.role is None or self.role.fleet.ready())

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
        if self.role is None:
            model = await anyio.to_thread.run_sync(self._load_file, self.settings.model_path)
        else:  # the generation the fleet serves now, which after a reload is not MODEL_PATH's bytes
            generation = self.role.fleet.current()
            model = await anyio.to_thread.run_sync(self._load_generation, generation)
            self._generation = generation
            self.role.fleet.ack(self.role.index, generation)
        self._install(model)
        log.info("model loaded", extra=_describe(model) | {"load_ms": round((time.perf_counter() - start) * 1000, 1)})
        if self.role is not None:
            self.role.fleet.mark_loaded(self.role.index)  # after the line above, so the log reads in order
        return model

    async def reload(self, path: Path | None = None) -> OnnxModel:
        """Load and validate the new model, then swap. On failure the old model keeps serving."""
        path = path or self.settings.model_path
        async with self._reload_lock:
            previous = self._model
            try:
                data = await anyio.to_thread.run_sync(read_model_file, path)
                model = await anyio.to_thread.run_sync(model_from_bytes, data, path, self.tuning)
                if self.role is None:
                    self._install(model)  # one reference assignment: requests already running keep their model
                else:
                    await self._roll_out(data, model)
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
            self.metrics.reloads.labels(result="success").inc()
            log.info(
                "model reloaded",
                extra=_describe(model) | {"previous_version": previous.metadata.model_version if previous else None},
            )
            return model

    async def follow(self) -> None:
        """With a fleet: serve each generation another worker publishes, until cancelled."""
        if self.role is None:
            return
        fleet, index = self.role.fleet, self.role.index
        while True:
            await asyncio.sleep(FOLLOW_INTERVAL_S)
            if os.getppid() != self.role.supervisor_pid:  # the supervisor is gone: drain and exit, never linger
                log.warning("the supervisor exited; shutting this worker down")
                os.kill(os.getpid(), signal.SIGTERM)
                return
            current = self._generation
            if self._leading or current is None:
                continue
            latest = fleet.current()
            if latest.number <= current.number:
                continue
            try:
                model = await anyio.to_thread.run_sync(self._load_generation, latest)
            except ModelError as exc:
                log.error("cannot serve the new generation; the reload will be rolled back", extra={"reason": str(exc)})
                self._generation = latest  # tried: wait for the roll-back generation, do not retry this one
                fleet.ack(index, latest, error=str(exc))
                continue
            self._install(model)
            self._generation = latest
            fleet.ack(index, latest)
            log.info("model switched", extra=_describe(model) | {"generation": latest.number})

    async def _roll_out(self, data: bytes, model: OnnxModel) -> None:
        """Make `model` (validated here) what every worker serves, or roll every worker back and raise."""
        assert self.role is not None and self._model is not None and self._generation is not None
        fleet, index = self.role.fleet, self.role.index
        lock = fleet.lock()
        await anyio.to_thread.run_sync(lock.__enter__)  # another worker may be rolling out: wait for it
        try:
            while self._generation.number < fleet.current().number:  # let `follow` catch up with that one
                await asyncio.sleep(FOLLOW_INTERVAL_S)
            self._leading = True
            previous, previous_generation = self._model, self._generation
            generation = fleet.publish(data, model.path, model.sha256)
            self._install(model)
            self._generation = generation
            fleet.ack(index, generation)
            failure = await self._wait_for_every_worker(generation)
            if failure is None:
                return
            back = fleet.republish(previous_generation)
            self._install(previous)
            self._generation = back
            fleet.ack(index, back)
            await self._wait_for_every_worker(back)
            raise ModelError(f"{failure}; rolled back to model_version {previous.metadata.model_version} everywhere")
        finally:
            self._leading = False
            lock.__exit__(None, None, None)

    async def _wait_for_every_worker(self, generation: Generation) -> str | None:
        """None once every worker serves `generation`; else why one does not."""
        assert self.role is not None
        deadline = time.monotonic() + ROLL_OUT_TIMEOUT_S
        while time.monotonic() < deadline:
            acks = self.role.fleet.acks()
            for index, ack in sorted(acks.items()):
                if ack.number == generation.number and ack.error is not None:
                    return f"worker {index} cannot load it: {ack.error}"
            if len(acks) == self.role.fleet.workers and all(a.number >= generation.number for a in acks.values()):
                return None
            await asyncio.sleep(0.02)
        return f"not every worker confirmed the new model within {ROLL_OUT_TIMEOUT_S:.0f} s"

    def _load_file(self, path: Path) -> OnnxModel:
        return model_from_bytes(read_model_file(path), path, self.tuning)

    def _load_generation(self, generation: Generation) -> OnnxModel:
        return model_from_bytes(read_model_file(generation.staged), generation.source, self.tuning)

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
