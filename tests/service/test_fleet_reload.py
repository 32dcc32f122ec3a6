"""A reload across workers, with two ModelHosts in one process sharing a run directory: the worker
that takes the reload leads it, the other follows the generation file, and a worker that cannot
load the new model puts every worker back on the old one."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from service.config import Settings
from service.fleet import Fleet, Generation, WorkerRole
from service.host import ModelHost
from service.metrics import Metrics
from service.model import ModelError, OnnxModel, read_model_file
from tests.helpers.onnx_models import build_model

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def two_workers(model_path: Path) -> AsyncIterator[tuple[ModelHost, ModelHost, Fleet]]:
    fleet = Fleet.create(workers=2)
    data = read_model_file(model_path)
    fleet.publish(data, model_path, hashlib.sha256(data).hexdigest())
    settings = Settings(model_path=model_path, workers=2, inference_threads=1, ort_intra_op_threads=1)
    hosts = [ModelHost(settings, Metrics(), WorkerRole(fleet, i, False, supervisor_pid=os.getppid())) for i in (0, 1)]
    for host in hosts:
        await host.load()
    fleet.mark_ready()
    followers = [asyncio.create_task(host.follow()) for host in hosts]
    try:
        yield hosts[0], hosts[1], fleet
    finally:
        for task in followers:
            task.cancel()
        for host in hosts:
            host.close()
        fleet.remove()


def versions(*hosts: ModelHost) -> list[str]:
    return [host.model.metadata.model_version for host in hosts]


async def test_the_leader_returns_once_the_other_worker_serves_the_new_model(model_path: Path) -> None:
    async with two_workers(model_path) as (leader, follower, fleet):
        assert leader.ready and follower.ready
        build_model(model_path, version="v2")
        model = await leader.reload()
        assert model.metadata.model_version == "v2"
        assert versions(leader, follower) == ["v2", "v2"]  # no waiting: the follower already swapped
        assert fleet.current().number == 1 and fleet.current().source == model_path


async def test_a_worker_that_cannot_load_it_rolls_every_worker_back(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with two_workers(model_path) as (leader, follower, fleet):
        v1 = fleet.current()
        build_model(model_path, version="v2")
        load = follower._load_generation

        def out_of_memory_for_new_models(generation: Generation) -> OnnxModel:
            if generation.sha256 != v1.sha256:
                raise ModelError("cannot allocate memory")
            return load(generation)

        monkeypatch.setattr(follower, "_load_generation", out_of_memory_for_new_models)
        with pytest.raises(
            ModelError, match="worker 1 cannot load it: cannot allocate memory; rolled back to model_version v1"
        ):
            await leader.reload()
        assert versions(leader, follower) == ["v1", "v1"]
        assert fleet.current().sha256 == v1.sha256 and fleet.current().number == 2  # the roll-back is a generation
        assert leader.metrics.reloads.labels(result="failure")._value.get() == 1


async def test_reloads_taken_by_both_workers_at_once_run_one_after_the_other(model_path: Path) -> None:
    async with two_workers(model_path) as (first, second, fleet):
        build_model(model_path, version="v3")
        await asyncio.gather(first.reload(), second.reload())
        assert versions(first, second) == ["v3", "v3"]
        assert fleet.current().number == 2
