"""The train image: Dockerfile.train built with torch from TORCH_INDEX_URL (PyTorch's CPU index
unless it is set), then the DVC pipeline run inside it on the mini archive with the integration
test's tiny params, as a non-root user, the data mounted read-only and the outputs written to a
mounted folder. Slow (torch goes into an image), so `make train-image` runs it, not .ci/run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.containers.engine import Engine
from tests.containers.images import build_project_image
from tests.helpers.paths import MINI_ZIP
from tests.helpers.pipeline import TINY_PARAMS

pytestmark = pytest.mark.slow

TRAIN_IMAGE = "catsdogs-train:local"  # docker-compose.yml's default TRAIN_IMAGE
TRAIN_UID = 10001  # Dockerfile.train's USER


def tiny_overrides() -> list[str]:
    """TINY_PARAMS as scripts/docker-train.sh's PARAMS entries; data.source comes from DATA_SOURCE."""
    entries = [
        f"{section}.{key}={json.dumps(value, separators=(',', ':'))}"
        for section, values in TINY_PARAMS.items()
        if section != "data"
        for key, value in values.items()
    ]
    assert not any(" " in entry for entry in entries), f"PARAMS is split on spaces: {entries}"
    return entries


def test_pipeline_runs_in_the_train_image_as_non_root_on_read_only_data(
    engine: Engine, python_base: str, tmp_path: Path
) -> None:
    assert MINI_ZIP.is_file(), f"{MINI_ZIP} is missing: the mini archive is mounted into the container from there"
    index = os.environ.get("TORCH_INDEX_URL")
    image = build_project_image(
        engine,
        "Dockerfile.train",
        TRAIN_IMAGE,
        python_base,
        *([f"--build-arg=TORCH_INDEX_URL={index}"] if index else []),
    )
    assert engine.inspect("{{.Config.User}}", image.tag) == f"{TRAIN_UID}:0"
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # written by the image's user, whoever runs the test
    start = time.monotonic()
    run = engine.run(
        "run", "--rm", "--network=none",
        f"--volume={MINI_ZIP.parent}:/data:ro", f"--volume={out}:/out",
        f"--env=DATA_SOURCE=/data/{MINI_ZIP.name}", "--env=OUTPUT_DIR=/out",
        f"--env=PARAMS={' '.join(tiny_overrides())}",
        image.tag,
        timeout=3600,
    )  # fmt: skip
    repro_s = time.monotonic() - start
    log = run.stdout + run.stderr
    for stage in ("ingest", "split", "prepare", "train", "export", "evaluate"):
        assert f"Running stage '{stage}'" in log, f"stage {stage} did not run:\n{log[-4000:]}"
    for name in ("model.onnx", "metrics.json", "best_model.pth", "dvc.lock", "reports/parity.json"):
        assert (out / name).is_file(), f"{name} not copied to the mounted output folder:\n{log[-4000:]}"
        assert (out / name).stat().st_uid == TRAIN_UID, f"{name} was not written by the non-root user"
    assert json.loads((out / "reports" / "parity.json").read_text())["passed"] is True
    assert json.loads((out / "reports" / "eval" / "report.json").read_text())["images"] == 100  # the mini test split
    figures = {
        "image_gb": round(engine.image_bytes(image.tag) / 1e9, 2),
        "build_s": round(image.build_s),
        "repro_s": round(repro_s),
    }
    print(f"\ntrain image: {json.dumps(figures | {'torch_index': index or 'Dockerfile.train default'})}")
