"""Checkpoints are replaced whole or not at all: a run killed while writing one keeps the previous one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import training.train as train
from tests.helpers.paths import REPO

# Saves epoch 1, then starts saving epoch 2 with an object whose pickling announces itself and hangs:
# by then torch.save has opened its output file, so the parent's SIGKILL lands mid-write.
WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    from training.train import save_checkpoint

    class Hang:
        def __reduce__(self):
            print("writing", flush=True)
            time.sleep(600)

    path = Path(sys.argv[1])
    save_checkpoint({"epoch": 1, "weights": torch.arange(1000)}, path)
    save_checkpoint({"epoch": 2, "weights": torch.arange(1000), "hang": Hang()}, path)
    """
)


@pytest.mark.slow  # a Python process per case, importing torch
@pytest.mark.parametrize("name", ["checkpoint.pth", "best_model.pth"])
def test_a_kill_mid_write_leaves_the_previous_checkpoint_readable(tmp_path: Path, name: str) -> None:
    path = tmp_path / "models" / name
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "writing\n", "the writer ended before its second save"
    finally:
        os.killpg(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1
    assert torch.equal(state["weights"], torch.arange(1000))


class DiskFull:
    def __reduce__(self) -> tuple[object, ...]:
        raise OSError("No space left on device")


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pth"
    train.save_checkpoint({"epoch": 1}, path)
    with pytest.raises(OSError, match="No space left"):
        train.save_checkpoint({"epoch": 2, "weights": DiskFull()}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]


def test_a_checkpoint_of_the_same_state_has_the_same_bytes(tmp_path: Path) -> None:
    """DVC caches best_model.pth by content: the temporary name must not leak into the file."""
    first, second = tmp_path / "a" / "best_model.pth", tmp_path / "b" / "best_model.pth"
    for path in (first, second):
        train.save_checkpoint({"epoch": 1, "weights": torch.arange(10)}, path)
    assert first.read_bytes() == second.read_bytes()
