"""`make setup` takes torch from PyPI (the CUDA build on Linux); `make setup TORCH=cpu` takes
PyTorch's CPU build from its CPU index, as Dockerfile.train does. Dry runs into a scratch venv
path: nothing is installed or removed."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

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
