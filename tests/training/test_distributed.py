"""Data-parallel plumbing: who this process is, which images it trains on, and in what order."""

from __future__ import annotations

import pytest
import torch

from training import distributed
from training.distributed import ONE_PROCESS, World

# (images, global batch, processes): even splits, remainders smaller and larger than a rank's share,
# a set that is exactly one batch, and world sizes up to 8.
SHAPES = [
    (800, 64, 1),
    (800, 64, 2),
    (801, 64, 2),
    (863, 64, 2),
    (100, 12, 3),
    (64, 64, 4),
    (1000, 32, 8),
    (95, 8, 8),
]


def _shards(n: int, batch: int, world_size: int, seed: int = 0, epoch: int = 0) -> list[list[torch.Tensor]]:
    order = distributed.epoch_order(n, seed, epoch)
    return [distributed.shard_batches(order, batch, rank, world_size) for rank in range(world_size)]


@pytest.mark.parametrize(("n", "batch", "world_size"), SHAPES)
def test_shards_cover_the_training_set_exactly_once_per_epoch(n: int, batch: int, world_size: int) -> None:
    for epoch in range(3):
        used = torch.cat([b for rank in _shards(n, batch, world_size, epoch=epoch) for b in rank])
        assert sorted(used.tolist()) == list(range(n))


@pytest.mark.parametrize(("n", "batch", "world_size"), SHAPES)
def test_every_rank_takes_the_same_number_of_steps_with_its_share_of_each_global_batch(
    n: int, batch: int, world_size: int
) -> None:
    shards = _shards(n, batch, world_size)
    steps = {len(rank) for rank in shards}
    assert steps == {n // batch}, "DDP hangs when one rank takes a step the others do not"
    for step in range(n // batch - 1):
        assert {len(rank[step]) for rank in shards} == {batch // world_size}
    last = [len(rank[-1]) for rank in shards]
    assert sum(last) == batch + n % batch
    assert max(last) - min(last) <= 1


def test_ranks_split_each_global_batch_of_the_one_process_order() -> None:
    """The global batch means the same whatever the process count: the same images, step by step."""
    order = distributed.epoch_order(200, seed=3, epoch=1)
    alone = distributed.shard_batches(order, 16, 0, 1)
    split = [distributed.shard_batches(order, 16, rank, 4) for rank in range(4)]
    for step, batch in enumerate(alone):
        assert sorted(torch.cat([rank[step] for rank in split]).tolist()) == sorted(batch.tolist())


def test_epoch_order_is_reproducible_from_the_seed_and_changes_every_epoch() -> None:
    first = distributed.epoch_order(500, seed=7, epoch=0)
    assert torch.equal(first, distributed.epoch_order(500, seed=7, epoch=0))
    assert sorted(first.tolist()) == list(range(500))
    assert not torch.equal(first, distributed.epoch_order(500, seed=7, epoch=1))
    assert not torch.equal(first, distributed.epoch_order(500, seed=8, epoch=0))
    assert not torch.equal(first, torch.arange(500)), "the order must be a shuffle"


def test_augmentation_streams_are_reproducible_and_differ_across_ranks_and_epochs() -> None:
    def draw(epoch: int, rank: int) -> torch.Tensor:
        return torch.rand(8, generator=distributed.augmentation_generator(0, epoch, rank))

    assert torch.equal(draw(0, 0), draw(0, 0))
    assert not torch.equal(draw(0, 0), draw(0, 1)), "ranks would crop their shards identically"
    assert not torch.equal(draw(0, 0), draw(1, 0))


def test_batch_size_that_does_not_divide_by_the_processes_names_the_fix() -> None:
    with pytest.raises(ValueError, match=r"train.batch_size 64 must divide by the 3 processes"):
        distributed.shard_batches(torch.arange(800), 64, 0, 3)


def test_fewer_images_than_one_global_batch_names_the_fix() -> None:
    with pytest.raises(ValueError, match=r"10 training images are fewer than train.batch_size 64"):
        distributed.shard_batches(torch.arange(10), 64, 0, 2)


def test_world_is_one_process_outside_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    world = distributed.current_world()
    assert world == ONE_PROCESS
    assert world.is_main and not world.distributed


def test_world_reads_torchruns_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The second of two nodes, each running 2 processes.
    for name, value in {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    world = distributed.current_world()
    assert world == World(rank=3, local_rank=1, size=4, local_size=2)
    assert world.distributed and not world.is_main


def test_world_without_local_variables_is_one_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert distributed.current_world() == World(rank=0, local_rank=0, size=2, local_size=2)


def test_sum_across_one_process_returns_the_values_unchanged() -> None:
    assert distributed.sum_across([1.5, 2.0], ONE_PROCESS, torch.device("cpu")) == [1.5, 2.0]
