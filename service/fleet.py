"""What the worker processes of one server share: a private run directory of small files.

- `generation.json`: the model every worker must serve (a number, and a staged copy of the bytes,
  so a MODEL_PATH rewritten mid-roll-out cannot give two workers two different models);
- `loaded-<i>` / `ack-<i>.json`: worker i has loaded the model / which generation it serves now;
- `ready`: the supervisor saw every worker loaded once, so `/ready` may answer 200;
- `metrics/`: prometheus_client's PROMETHEUS_MULTIPROC_DIR.

Files, not pipes, because a worker restarted later must find the same state on its own.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

RUN_DIR_ENV = "CATSDOGS_RUN_DIR"
INDEX_ENV = "CATSDOGS_WORKER_INDEX"
RESTARTED_ENV = "CATSDOGS_WORKER_RESTARTED"
SUPERVISOR_ENV = "CATSDOGS_SUPERVISOR_PID"


@dataclass(frozen=True)
class Generation:
    number: int
    staged: Path  # the bytes every worker loads
    source: Path  # the MODEL_PATH they were read from, named in logs and errors
    sha256: str


@dataclass(frozen=True)
class Ack:
    number: int
    error: str | None


class Fleet:
    def __init__(self, run_dir: Path, workers: int) -> None:
        self.run_dir = run_dir
        self.workers = workers

    @classmethod
    def create(cls, workers: int) -> Fleet:
        """A fresh run directory (under TMPDIR), so no file of an earlier server is ever summed."""
        fleet = cls(Path(tempfile.mkdtemp(prefix="catsdogs-")), workers)
        (fleet.metrics_dir).mkdir()
        (fleet.run_dir / "models").mkdir()
        return fleet

    @property
    def metrics_dir(self) -> Path:
        return self.run_dir / "metrics"

    def remove(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)

    # ---- the model generation ---------------------------------------------

    def current(self) -> Generation:
        raw = json.loads((self.run_dir / "generation.json").read_text())
        return Generation(raw["number"], Path(raw["staged"]), Path(raw["source"]), raw["sha256"])

    def publish(self, data: bytes, source: Path, sha256: str) -> Generation:
        """Stage `data` and make it the generation every worker must serve; call under `lock()`."""
        number = self.current().number + 1 if (self.run_dir / "generation.json").exists() else 0
        staged = self.run_dir / "models" / f"{number}.onnx"
        _write_atomically(staged, data)
        return self.republish(Generation(number, staged, source, sha256))

    def republish(self, generation: Generation) -> Generation:
        """Make an already staged model current again, under a new number (a roll-back is a new generation)."""
        number = self.current().number + 1 if (self.run_dir / "generation.json").exists() else generation.number
        record = {"number": number, "staged": str(generation.staged), "source": str(generation.source)}
        _write_atomically(self.run_dir / "generation.json", json.dumps(record | {"sha256": generation.sha256}).encode())
        self._prune(keep={generation.staged.name, *self._acked_files()})
        return Generation(number, generation.staged, generation.source, generation.sha256)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One roll-out at a time across workers (blocking: take it off the event loop)."""
        with (self.run_dir / "reload.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ---- per worker ---------------------------------------------------------

    def ack(self, index: int, generation: Generation, error: str | None = None) -> None:
        record = {"number": generation.number, "error": error, "staged": generation.staged.name}
        _write_atomically(self.run_dir / f"ack-{index}.json", json.dumps(record).encode())

    def acks(self) -> dict[int, Ack]:
        found = {}
        for index in range(self.workers):
            try:
                raw = json.loads((self.run_dir / f"ack-{index}.json").read_text())
            except (OSError, ValueError):
                continue
            found[index] = Ack(raw["number"], raw["error"])
        return found

    def mark_loaded(self, index: int) -> None:
        (self.run_dir / f"loaded-{index}").touch()

    def mark_gone(self, index: int) -> None:
        (self.run_dir / f"loaded-{index}").unlink(missing_ok=True)

    def loaded(self) -> set[int]:
        return {index for index in range(self.workers) if (self.run_dir / f"loaded-{index}").exists()}

    def mark_ready(self) -> None:
        (self.run_dir / "ready").touch()

    def ready(self) -> bool:
        return (self.run_dir / "ready").exists()

    def _acked_files(self) -> set[str]:
        names = set()
        for index in range(self.workers):
            try:
                names.add(json.loads((self.run_dir / f"ack-{index}.json").read_text())["staged"])
            except (OSError, ValueError, KeyError):
                continue
        return names

    def _prune(self, keep: set[str]) -> None:
        # Keep the models workers serve (a roll-back may need them); drop the rest so a
        # long-lived server's tmpfs does not fill with every model it ever reloaded.
        for staged in (self.run_dir / "models").iterdir():
            if staged.name not in keep and not staged.name.endswith(".tmp"):
                staged.unlink(missing_ok=True)


@dataclass(frozen=True)
class WorkerRole:
    """What the supervisor tells one worker process through its environment."""

    fleet: Fleet
    index: int
    restarted: bool
    supervisor_pid: int

    @classmethod
    def from_env(cls, env: Mapping[str, str], workers: int) -> WorkerRole:
        return cls(
            fleet=Fleet(Path(env[RUN_DIR_ENV]), workers),
            index=int(env[INDEX_ENV]),
            restarted=env.get(RESTARTED_ENV) == "1",
            supervisor_pid=int(env[SUPERVISOR_ENV]),
        )

    def env(self) -> dict[str, str]:
        return {
            RUN_DIR_ENV: str(self.fleet.run_dir),
            INDEX_ENV: str(self.index),
            RESTARTED_ENV: "1" if self.restarted else "0",
            SUPERVISOR_ENV: str(self.supervisor_pid),
            "PROMETHEUS_MULTIPROC_DIR": str(self.fleet.metrics_dir),
        }


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one."""
    partial = path.with_name(path.name + f".{os.getpid()}.tmp")
    partial.write_bytes(data)
    partial.replace(path)
