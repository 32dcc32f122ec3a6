"""The DVC pipeline at a size a test can run: the tiny parameters and how they are written, and each
stage as dvc.yaml declares it, so a test runs a stage exactly as `dvc repro` does."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.paths import MINI_ZIP, REPO

# The committed recipe's pretrained arch, shrunk: 64 px, 2 epochs, a loose int8 guard for a 100-image val split.
TINY_PARAMS = {
    "data": {"source": str(MINI_ZIP)},
    "preprocess": {"image_size": 64},
    "model": {"arch": "efficientnet_lite0", "pretrained": True, "frozen_blocks": 3},
    "train": {"epochs": 2, "batch_size": 64, "threads": 2, "crop_size": 56},
    "export": {"parity_images": 64},
    # A 2-epoch 64 px model sits near its decision boundary on many photos, so int8 flips several of
    # the 100 validation photos (measured: 96% agreement, a 4-point drop); the real recipe is held to
    # 99.5% / 0.2. A flat-grey calibration (test_pipeline.py) still lands far outside these.
    "quantize": {"enabled": True, "calibration_images": 128, "min_agreement": 0.9, "max_accuracy_drop": 0.08},
}


def set_params(path: Path, overrides: dict) -> None:
    """Update params.yaml at `path` section by section."""
    params = yaml.safe_load(path.read_text())
    for section, values in overrides.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


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
