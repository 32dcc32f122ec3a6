"""The pipeline's stages as dvc.yaml declares them, so a test runs a stage exactly as `dvc repro` does."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def dvc_stages() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def stage_words(stage: str) -> list[str]:
    """The stage's `cmd`, split as a shell would: `python -m <module> <paths...>`."""
    words = shlex.split(dvc_stages()[stage]["cmd"])
    if words[:2] != ["python", "-m"]:
        raise ValueError(f"stage {stage}: cmd must read `python -m <module> ...`, got {words[:3]}")
    return words


def stage_module(stage: str) -> str:
    return stage_words(stage)[2]


def stage_args(stage: str) -> list[str]:
    """What dvc.yaml passes the stage's module: its paths."""
    return stage_words(stage)[3:]


def stage_command(stage: str) -> list[str]:
    """The stage's command, run by this test's interpreter."""
    return [sys.executable, *stage_words(stage)[1:]]
