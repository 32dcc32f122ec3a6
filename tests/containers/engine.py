"""A private Docker engine for the container checks: its own dockerd, socket, data root and
containerd namespace, host networking only. The test session starts it and stops it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# The data root outlives the session on purpose: it holds the layer cache and the stand-in
# bases a rerun starts from. Nothing else here is shared with a system-wide engine.
DATA_ROOT = Path("/var/lib/catsdogs-docker")
EXEC_ROOT = Path("/run/catsdogs-docker")
SOCKET = Path("/run/catsdogs-docker.sock")
PIDFILE = Path("/run/catsdogs-docker.pid")
INSTALL_FIX = "run `make container-deps` (Debian's docker.io, docker-compose and debootstrap)"


def privileged(cmd: list[str]) -> list[str]:
    """dockerd, debootstrap and the rootfs tarball need root; CI runners give it through sudo."""
    return cmd if os.geteuid() == 0 else ["sudo", "-n", *cmd]


def require(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"`{name}` is not installed; {INSTALL_FIX}")
    return path


def pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


@dataclass
class Engine:
    pid: int  # dockerd's own PID, read from its pidfile
    process: subprocess.Popen[bytes]  # what we started: dockerd itself, or sudo around it
    docker: str  # the CLI

    @property
    def env(self) -> dict[str, str]:
        # The classic builder: BuildKit would try to pull the `# syntax=` frontend from a registry.
        return {**os.environ, "DOCKER_HOST": f"unix://{SOCKET}", "DOCKER_BUILDKIT": "0"}

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.docker, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def inspect(self, template: str, name: str) -> str:
        return self.run("inspect", "--format", template, name).stdout.strip()

    def image_bytes(self, tag: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", tag).stdout)


def start_engine(log_dir: Path, timeout: float = 300.0) -> Engine:
    dockerd, docker = require("dockerd"), require("docker")
    if PIDFILE.exists():
        stale = int(PIDFILE.read_text().strip() or 0)
        if stale and pid_alive(stale):
            raise AssertionError(
                f"a dockerd from an earlier run still holds {PIDFILE} (pid {stale}); stop it: kill {stale}"
            )
    log_path = log_dir / "dockerd.log"
    command = [
        # Builds and containers are CPU heavy and inherit the daemon's niceness: let other work go first.
        "nice", "-n", "10", dockerd,
        f"--data-root={DATA_ROOT}",
        f"--exec-root={EXEC_ROOT}",
        f"--pidfile={PIDFILE}",
        f"--host=unix://{SOCKET}",
        # No bridge and no iptables rules: containers use the host's network, traffic stays on loopback.
        "--bridge=none",
        "--iptables=false",
        # Its own containerd namespace, in case a system containerd (e.g. a CI runner's) is shared.
        "--containerd-namespace=catsdogs-ci",
        "--containerd-plugins-namespace=catsdogs-ci-plugins",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(privileged(command), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_answering(docker, process, log_path, timeout)
    except BaseException:
        stop_process(process)
        raise
    return Engine(int(PIDFILE.read_text().strip()), process, docker)


def wait_until_answering(docker: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"dockerd exited with {process.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}"
            )
        try:
            ready = subprocess.run(
                [docker, "version", "--format", "{{.Server.Version}}"],
                env={**os.environ, "DOCKER_HOST": f"unix://{SOCKET}"},
                capture_output=True,
                timeout=30,
            )
            if ready.returncode == 0 and PIDFILE.exists():
                return
        except subprocess.TimeoutExpired:
            pass  # a daemon still starting on a busy machine
        time.sleep(0.5)
    raise AssertionError(
        f"dockerd not answering within {timeout:.0f} s:\n{log_path.read_text(errors='replace')[-3000:]}"
    )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    """SIGTERM lets dockerd stop its containers and containerd; SIGKILL only if it hangs.
    (sudo relays the signals to the daemon it started.)"""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 30.0)):
        if process.poll() is not None:
            return
        if os.geteuid() == 0:
            process.send_signal(sig)
        else:
            subprocess.run(["sudo", "-n", "kill", f"-{sig.name[3:]}", str(process.pid)], check=False)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def stop_engine(engine: Engine) -> None:
    stop_process(engine.process)
    if pid_alive(engine.pid):
        raise AssertionError(f"dockerd (pid {engine.pid}) is still running after SIGTERM and SIGKILL")
