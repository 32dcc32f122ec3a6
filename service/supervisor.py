"""The parent of WORKERS worker processes: start them, restart the ones that die, stop them all.

Each worker listens on its own SO_REUSEPORT socket on the port reserved here (service/listen.py
says why not one shared socket). The supervisor itself serves nothing and loads no model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from service.config import Settings
from service.fleet import Fleet, WorkerRole
from service.model import read_model_file
from service.serve import EXIT_CANNOT_SERVE, GRACEFUL_SHUTDOWN_S, url

log = logging.getLogger("catsdogs.supervisor")
POLL_S = 0.05
# More deaths than this within the window is a crash loop: restarting again would only spin.
CRASH_LOOP_DEATHS = 5
CRASH_LOOP_WINDOW_S = 60.0


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen[bytes]


class Supervisor:
    def __init__(self, settings: Settings, sock: socket.socket) -> None:
        self.settings = settings
        self.sock = sock
        self.fleet = Fleet.create(settings.workers)
        self.workers: dict[int, Worker] = {}
        self.deaths: deque[float] = deque()
        self.stop_requested = False
        self.reload_requested = False

    def start(self) -> Callable[[], int]:
        """Stage the model for the workers (a missing file stops start-up here), then return `run`."""
        path = self.settings.model_path
        try:
            data = read_model_file(path)
            self.fleet.publish(data, path, hashlib.sha256(data).hexdigest())
        except BaseException:
            self.fleet.remove()  # `run` never comes: leave no run directory behind
            raise
        return self.run

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        try:
            code = self._start_all()
            if code is None:
                code = self._supervise()
            self._stop_all()
            return code
        finally:
            self.sock.close()
            self.fleet.remove()

    def _start_all(self) -> int | None:
        """Worker 0 first: a model that cannot load is then reported once, not by every worker."""
        for batch in ([0], range(1, self.settings.workers)):
            for index in batch:
                self._spawn(index, restarted=False)
            while not set(batch) <= self.fleet.loaded():
                if self.stop_requested:
                    return 0
                for worker in list(self.workers.values()):
                    if (code := worker.proc.poll()) is not None:
                        # The worker's own `cannot start` line said why; exit as it did.
                        return code if code > 0 else EXIT_CANNOT_SERVE
                time.sleep(POLL_S)
        self.fleet.mark_ready()
        log.info(
            "listening",
            extra={
                "url": url(self.sock),
                "workers": self.settings.workers,
                "pids": [w.proc.pid for w in self.workers.values()],
                "inference_threads": self.settings.inference_threads,
                "ort_intra_op_threads": self.settings.ort_intra_op_threads,
                "run_dir": str(self.fleet.run_dir),
            },
        )
        return None

    def _supervise(self) -> int:
        while not self.stop_requested:
            if self.reload_requested:
                self.reload_requested = False
                self._forward_reload()
            for worker in list(self.workers.values()):
                if (code := worker.proc.poll()) is not None and not self.stop_requested:
                    if not self._restart(worker, code):
                        return EXIT_CANNOT_SERVE
            time.sleep(POLL_S)
        return 0

    def _restart(self, worker: Worker, code: int) -> bool:
        """Replace a dead worker; False when deaths come too fast to be worth another try."""
        mark_process_dead(worker.proc.pid, str(self.fleet.metrics_dir))  # its live gauges no longer count
        self.fleet.mark_gone(worker.index)  # no SIGHUP is forwarded to its replacement before it has loaded
        now = time.monotonic()
        self.deaths.append(now)
        while self.deaths and self.deaths[0] < now - CRASH_LOOP_WINDOW_S:
            self.deaths.popleft()
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        if len(self.deaths) > CRASH_LOOP_DEATHS:
            log.critical(
                "stopping: workers died %d times within %.0f s (the last, worker %d, %s); this is a crash loop, "
                "so the server stops instead of restarting them again: fix the cause the worker lines above name",
                len(self.deaths),
                CRASH_LOOP_WINDOW_S,
                worker.index,
                how,
            )
            return False
        log.error("worker %d (pid %d) %s; restarting it", worker.index, worker.proc.pid, how)
        self._spawn(worker.index, restarted=True)
        return True

    def _spawn(self, index: int, restarted: bool) -> None:
        role = WorkerRole(self.fleet, index, restarted, supervisor_pid=os.getpid())
        sized = {
            "PORT": str(self.sock.getsockname()[1]),  # the real port when PORT=0
            "WORKERS": str(self.settings.workers),
            "INFERENCE_THREADS": str(self.settings.inference_threads),
            "ORT_INTRA_OP_THREADS": str(self.settings.ort_intra_op_threads),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.worker"],
            cwd=Path(__file__).resolve().parents[1],
            env=os.environ | sized | role.env(),
            process_group=0,  # a terminal's Ctrl-C reaches only the supervisor, which stops the workers once
        )
        self.workers[index] = Worker(index, proc)

    def _forward_reload(self) -> None:
        """SIGHUP: one worker leads the reload and the fleet follows it (service/host.py)."""
        for worker in self.workers.values():
            if worker.proc.poll() is None and worker.index in self.fleet.loaded():
                worker.proc.send_signal(signal.SIGHUP)
                return
        log.error("SIGHUP: no worker is up to reload the model; send it again once /ready is 200")

    def _stop_all(self) -> None:
        """SIGTERM every worker (each drains its in-flight requests), then wait; SIGKILL only past the grace."""
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACEFUL_SHUTDOWN_S + 3
        for worker in self.workers.values():
            try:
                worker.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not drain in time; killing it", worker.index)
                worker.proc.kill()
                worker.proc.wait()

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested = True

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True
