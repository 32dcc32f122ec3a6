"""How many CPUs this process may really use, and how to split them into workers and threads.

`os.cpu_count()` is the machine's count; a container limited to 2 CPUs on a 64-core host would
start 64 workers. The real budget is the smaller of the CPU affinity mask and the cgroup quota.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CpuPlan:
    workers: int
    inference_threads: int  # per worker: decode + model calls running at once
    ort_intra_op_threads: int  # per model call


def usable_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """The CPUs this process may keep busy: affinity mask, capped by the cgroup quota (floor, at least 1)."""
    affinity = len(os.sched_getaffinity(0))
    quota = cgroup_quota(root, _read(proc_cgroup) or "")
    return cpus_from(affinity, quota)


def cpus_from(affinity: int, quota: float | None) -> int:
    # A 1.5-CPU quota gets one worker: two would be throttled for a third of every period.
    return max(1, min(affinity, math.floor(quota)) if quota is not None else affinity)


def cgroup_quota(root: Path, proc_cgroup: str) -> float | None:
    """The tightest CPU quota (in CPUs) on this process's cgroup and its ancestors; None when unlimited."""
    quotas = []
    for directory in _cgroup_dirs(root, proc_cgroup):
        if (cpu_max := _read(directory / "cpu.max")) is not None:
            quotas.append(parse_cpu_max(cpu_max))
        elif (quota := _read(directory / "cpu.cfs_quota_us")) is not None:
            quotas.append(parse_cfs(quota, _read(directory / "cpu.cfs_period_us") or "100000"))
    limits = [q for q in quotas if q is not None]
    return min(limits) if limits else None


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 `cpu.max` ("max 100000" or "200000 100000") -> CPUs, None when unlimited."""
    quota, _, period = text.strip().partition(" ")
    if quota == "max" or not quota:
        return None
    return int(quota) / int(period or "100000")


def parse_cfs(quota: str, period: str) -> float | None:
    """cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` -> CPUs, None when unlimited (-1)."""
    value = int(quota.strip())
    return None if value <= 0 else value / int(period.strip())


def plan(cpus: int, workers: int = 0, inference_threads: int = 0, intra_op_threads: int = 0) -> CpuPlan:
    """Fill in what is 0 (auto) so that workers x threads x intra-op threads fits in `cpus`.

    One worker per CPU: even on 2 CPUs, two single-threaded workers served 1.2-1.5x the req/s of one
    worker with 2 threads at about the same CPU per request (docs/service.md, "Workers and throughput").
    Parallelism across requests beats parallelism inside one small model call, so each model call
    runs on one thread unless INFERENCE_THREADS leaves a worker's share of the CPUs idle.
    """
    workers = workers or cpus
    share = max(1, cpus // workers)
    inference_threads = inference_threads or share
    intra_op_threads = intra_op_threads or max(1, share // inference_threads)
    return CpuPlan(workers, inference_threads, intra_op_threads)


def _cgroup_dirs(root: Path, proc_cgroup: str) -> list[Path]:
    """Where the CPU controller's files may be: the v2 unified path, the v1 cpu path, and their ancestors.

    Inside a container the cgroup namespace makes our own cgroup the root, so the root itself is a candidate.
    """
    relative: list[tuple[Path, str]] = []
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            relative.append((root, path))
        elif "cpu" in controllers.split(","):
            relative.extend((root / name, path) for name in (controllers, "cpu", "cpu,cpuacct"))
    if not relative:
        relative = [(root, "/"), (root / "cpu", "/")]
    dirs: list[Path] = []
    for base, path in relative:
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):
            candidate = base.joinpath(*parts[:depth])
            if candidate not in dirs:
                dirs.append(candidate)
    return dirs


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
