"""`make setup` takes torch from PyPI (the CUDA build on Linux); `make setup TORCH=cpu` takes
PyTorch's CPU build from its CPU index, as Dockerfile.train does. Dry runs into a scratch venv
path: nothing is installed or removed. The failure paths run for real, into a scratch venv, with
the CPU index on a closed local port and pip's own configuration switched off."""

from __future__ import annotations

import os
import re
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from tests.helpers.network import free_port
from tests.helpers.paths import REPO

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def dry_run_setup(venv: Path, *variables: str) -> subprocess.CompletedProcess[str]:
    """`make -n -B setup`: every recipe line `make setup` would run, even where .venv is up to date."""
    # An outer `make test TORCH=cpu` passes its variables down through MAKEFLAGS; this run sets its own.
    env = {k: v for k, v in os.environ.items() if k not in {"TORCH", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    return subprocess.run(
        ["make", "-n", "-B", "setup", f"VENV={venv}", *variables],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_setup_torch_cpu_installs_torch_from_pytorchs_cpu_index_into_a_fresh_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    proc = dry_run_setup(venv, "TORCH=cpu")
    assert proc.returncode == 0, proc.stderr
    plan = proc.stdout
    steps = [
        f"rm -rf {venv}",  # pip would keep a CUDA build already there: it satisfies the same pin
        f"--index-url {CPU_INDEX}",
        "$(grep -E '^(torch|torchvision)==' requirements/train.txt)",  # train.txt's pins, nothing else
        "torch.version.cuda",  # a CUDA build taken from another index stops here
        "-r requirements/dev.txt",  # then everything else; torch is already satisfied
    ]
    positions = [plan.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), plan


def test_default_setup_takes_torch_from_pypi_and_keeps_the_venv(tmp_path: Path) -> None:
    proc = dry_run_setup(tmp_path / "venv")
    assert proc.returncode == 0, proc.stderr
    plan = proc.stdout
    assert "-r requirements/dev.txt" in plan
    assert "download.pytorch.org" not in plan and "--index-url" not in plan and "rm -rf" not in plan


def test_unknown_torch_build_stops_make_naming_the_choices(tmp_path: Path) -> None:
    proc = dry_run_setup(tmp_path / "venv", "TORCH=cuda")
    assert proc.returncode != 0
    assert "TORCH=cuda is not a torch build; use TORCH=cpu" in proc.stderr and "leave TORCH unset" in proc.stderr


def test_make_setup_and_dockerfile_train_use_the_same_cpu_index() -> None:
    makefile = (REPO / "Makefile").read_text()
    dockerfile = (REPO / "Dockerfile.train").read_text()
    assert re.search(rf"^TORCH_CPU_INDEX_URL := {re.escape(CPU_INDEX)}$", makefile, flags=re.M)
    assert re.search(rf"^ARG TORCH_INDEX_URL={re.escape(CPU_INDEX)}$", dockerfile, flags=re.M)


def _cuda_wheel(folder: Path, name: str, version: str) -> None:
    """A stand-in for a CUDA build on another index: `import torch` works and torch.version.cuda is set."""
    folder.mkdir(exist_ok=True)
    info = f"{name}-{version}.dist-info"
    code = f'__version__ = "{version}+cu128"\n\n\nclass version:\n    cuda = "12.8"\n'
    files = {
        f"{name}/__init__.py": code,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)


def real_setup_cpu(venv: Path, **pip_env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """`make setup TORCH=cpu` for real, the CPU index on a closed port; returns the run and its seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k not in {"TORCH", "MAKEFLAGS"}}
    env |= {"PIP_CONFIG_FILE": os.devnull} | pip_env  # this box's own indexes must not answer either
    index = f"http://127.0.0.1:{free_port()}/simple"  # nothing listens there
    started = time.perf_counter()
    proc = subprocess.run(
        ["make", "setup", f"VENV={venv}", "TORCH=cpu", f"TORCH_CPU_INDEX_URL={index}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, time.perf_counter() - started


@pytest.mark.slow
def test_setup_torch_cpu_with_its_index_unreachable_stops_in_seconds_with_its_own_message(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    proc, seconds = real_setup_cpu(venv)
    assert proc.returncode != 0
    assert "make setup TORCH=cpu: no CPU build of torch from http://127.0.0.1:" in proc.stderr, proc.stderr
    assert "run make setup without TORCH=cpu" in proc.stderr
    assert not venv.exists()
    assert seconds < 120, seconds  # a venv (ensurepip) and one refused connection; pip's retries took 90 s


@pytest.mark.slow
def test_setup_torch_cpu_that_gets_a_cuda_build_elsewhere_stops_with_the_same_message(tmp_path: Path) -> None:
    wheels = tmp_path / "other-index"
    pins = dict(
        line.split("==")
        for line in (REPO / "requirements/train.txt").read_text().splitlines()
        if re.match(r"^(torch|torchvision)==", line)
    )
    for name, version in pins.items():
        _cuda_wheel(wheels, name, version)
    venv = tmp_path / "venv"
    proc, _ = real_setup_cpu(venv, PIP_FIND_LINKS=str(wheels))
    assert proc.returncode != 0
    assert f"got torch {pins['torch']}+cu128, built for CUDA 12.8" in proc.stderr, proc.stderr
    assert "make setup TORCH=cpu: no CPU build of torch" in proc.stderr
    assert not venv.exists()
