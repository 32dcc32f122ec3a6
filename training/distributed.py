"""Data-parallel plumbing for training.py: which process this is, its shard, and the launcher.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE (and LOCAL_WORLD_SIZE); without them
training is one process and nothing here talks to torch.distributed. Every
random stream is derived from (seed, epoch, ...) rather than carried along, so
an epoch's order and augmentations are the same after a resume and whatever the
process count does to the pace.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from training.errors import ParamsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


ONE_PROCESS = World()


def current_world() -> World:
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return ONE_PROCESS
    size = int(env["WORLD_SIZE"])
    return World(
        rank=int(env["RANK"]),
        local_rank=int(env.get("LOCAL_RANK", "0")),
        size=size,
        local_size=int(env.get("LOCAL_WORLD_SIZE", str(size))),
    )


def launch(processes: int, module: str, args: Sequence[str], checkpoint: Path) -> int:
    """Run `module` with `args` under torchrun on this machine; returns its exit status."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        module,
        *args,
    ]
    log.info("launching %d data-parallel processes: %s", processes, " ".join(command))
    status = subprocess.run(command, check=False).returncode
    if status != 0:
        log.error(
            "training failed in one of its %d processes (exit status %d); the failing rank's error is above. "
            "Fix it and rerun: the run resumes from %s.",
            processes,
            status,
            checkpoint,
        )
    return status


def start(world: World, device: torch.device, timeout_s: int) -> None:
    """Join the process group: NCCL between GPUs, gloo between CPU processes."""
    if not world.distributed:
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    log.info("rank %d/%d joined (%s)", world.rank, world.size, backend)


def stop(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def epoch_order(count: int, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's shuffle of the training set, identical on every rank."""
    generator = torch.Generator().manual_seed(derived_seed(seed, epoch))
    return torch.randperm(count, generator=generator)


def augmentation_generator(seed: int, epoch: int, rank: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Each rank draws its own crops and colours, on the device it augments on; reproducible from the seed alone.

    A CUDA generator's stream differs from a CPU one's for the same seed, so results are reproducible per device.
    """
    return torch.Generator(device=device).manual_seed(derived_seed(seed, epoch, rank + 1))


def shard_batches(order: torch.Tensor, batch_size: int, rank: int, world_size: int) -> list[torch.Tensor]:
    """This rank's part of each global batch.

    Global batches of `batch_size` walk the epoch's order; the last one also takes
    the remainder, so every image is used exactly once per epoch and every rank
    gets the same number of steps (DDP needs that) with batch_size / world_size
    images each (one more at most in the last step).
    """
    if batch_size % world_size:
        raise ParamsError(f"train.batch_size {batch_size} must divide by the {world_size} processes")
    steps = len(order) // batch_size
    if steps == 0:
        raise ParamsError(f"{len(order)} training images are fewer than train.batch_size {batch_size}")
    # Not order[:k].split(): an empty tensor splits into one empty batch, a NaN step when steps == 1.
    batches = [order[step * batch_size : (step + 1) * batch_size] for step in range(steps - 1)]
    batches.append(order[(steps - 1) * batch_size :])
    return [batch[rank::world_size] for batch in batches]


def share_from_main(module: torch.nn.Module, world: World) -> None:
    """Give every rank rank 0's weights and BatchNorm statistics, so all ranks validate the saved model.

    DDP keeps parameters in step, but each rank's BatchNorm statistics (and so its weight average's)
    drift between broadcasts.
    """
    if not world.distributed:
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def sum_across(values: list[float], world: World, device: torch.device) -> list[float]:
    """Element-wise sum of per-rank values (counts, loss sums) over all ranks."""
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()
