"""How many CPUs the service may use (affinity and cgroup quota) and how WORKERS=auto splits them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.config import ConfigError, Settings
from service.cpus import CpuPlan, cgroup_quota, cpus_from, parse_cfs, parse_cpu_max, plan, usable_cpus


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    "text,cpus", [("max 100000\n", None), ("200000 100000\n", 2.0), ("150000 100000", 1.5), ("50000 100000", 0.5)]
)
def test_cgroup_v2_cpu_max_reads_as_cpus(text: str, cpus: float | None) -> None:
    assert parse_cpu_max(text) == cpus


@pytest.mark.parametrize(
    "quota,period,cpus", [("-1\n", "100000\n", None), ("400000", "100000", 4.0), ("25000", "50000", 0.5)]
)
def test_cgroup_v1_cfs_quota_reads_as_cpus(quota: str, period: str, cpus: float | None) -> None:
    assert parse_cfs(quota, period) == cpus


@pytest.mark.parametrize(
    "affinity,quota,usable", [(8, None, 8), (64, 2.0, 2), (8, 1.5, 1), (8, 0.5, 1), (2, 4.0, 2), (3, 3.9, 3)]
)
def test_usable_cpus_are_the_affinity_capped_by_the_whole_cpus_of_the_quota(
    affinity: int, quota: float | None, usable: int
) -> None:
    assert cpus_from(affinity, quota) == usable


def test_the_tightest_quota_on_the_way_to_the_root_wins_in_cgroup_v2(tmp_path: Path) -> None:
    write(tmp_path / "cpu.max", "max 100000")
    write(tmp_path / "kubepods" / "cpu.max", "300000 100000")
    write(tmp_path / "kubepods" / "pod1" / "cpu.max", "max 100000")
    assert cgroup_quota(tmp_path, "0::/kubepods/pod1\n") == 3.0


def test_a_container_sees_its_own_cgroup_v1_quota_at_the_controller_root(tmp_path: Path) -> None:
    # Without a cgroup namespace /proc/self/cgroup names the host's path, which is not mounted inside.
    write(tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us", "200000\n")
    write(tmp_path / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_quota(tmp_path, "4:cpu,cpuacct:/docker/abc123\n3:memory:/docker/abc123\n") == 2.0


def test_no_cpu_controller_files_means_no_quota(tmp_path: Path) -> None:
    assert cgroup_quota(tmp_path, "0::/\n") is None
    assert usable_cpus(tmp_path, tmp_path / "no-such-file") == len(os.sched_getaffinity(0))


def test_usable_cpus_applies_the_quota_it_finds(tmp_path: Path) -> None:
    write(tmp_path / "cpu.max", "100000 100000")
    write(tmp_path / "self-cgroup", "0::/\n")
    assert usable_cpus(tmp_path, tmp_path / "self-cgroup") == 1


@pytest.mark.parametrize(
    "cpus,asked,planned",
    [
        (16, (0, 0, 0), CpuPlan(16, 1, 1)),  # auto: a worker per CPU, one thread each
        (2, (0, 0, 0), CpuPlan(2, 1, 1)),
        (1, (0, 0, 0), CpuPlan(1, 1, 1)),
        (4, (1, 0, 0), CpuPlan(1, 4, 1)),  # one worker gets every CPU as inference threads
        (8, (2, 2, 0), CpuPlan(2, 2, 2)),  # threads left idle by the pool go to each model call
        (2, (4, 0, 0), CpuPlan(4, 1, 1)),  # more workers than CPUs: never below one thread
        (8, (2, 1, 3), CpuPlan(2, 1, 3)),  # what is set is kept
    ],
)
def test_plan_fills_in_auto_so_workers_times_threads_fit_the_cpus(
    cpus: int, asked: tuple[int, int, int], planned: CpuPlan
) -> None:
    assert plan(cpus, *asked) == planned


def test_settings_take_auto_or_a_number_and_are_sized_once() -> None:
    assert Settings.from_env({"WORKERS": "auto", "INFERENCE_THREADS": "AUTO"}).workers == 0
    sized = Settings.from_env({"WORKERS": "auto"}).sized_for(4)
    assert (sized.workers, sized.inference_threads, sized.ort_intra_op_threads) == (4, 1, 1)
    assert sized.sized_for(64) == sized  # already sized: nothing left to fill in
    with pytest.raises(ConfigError, match="WORKERS='0' .* or auto"):
        Settings.from_env({"WORKERS": "0"})
