"""The Docker build context and the train entrypoint, checked without an engine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.paths import REPO


def dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """(is_exception, regex) per .dockerignore line, with Docker's matching rules."""
    patterns = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line.lstrip("!").strip("/")
        regex, i = "", 0
        while i < len(line):
            if line.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif line.startswith("**", i):
                regex += ".*"
                i += 2
            elif line[i] == "*":
                regex += "[^/]*"
                i += 1
            elif line[i] == "?":
                regex += "[^/]"
                i += 1
            elif line[i] == "[":
                end = line.index("]", i)
                regex += line[i : end + 1]
                i = end + 1
            else:
                regex += re.escape(line[i])
                i += 1
        patterns.append((negate, re.compile(regex + "$")))
    return patterns


def build_context(root: Path) -> list[str]:
    """Files `docker build` would send from root: a path (or any parent dir) matched by a
    pattern is excluded unless a later `!` pattern matches it; the last match wins."""
    patterns = dockerignore_patterns()
    context = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            rel = str((Path(dirpath) / name).relative_to(root))
            parts = rel.split("/")
            candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
            excluded = False
            for negate, regex in patterns:
                if any(regex.match(c) for c in candidates):
                    excluded = not negate
            if not excluded:
                context.append(rel)
    return sorted(context)


def copy_sources(dockerfile: str) -> list[str]:
    sources = []
    for line in (REPO / dockerfile).read_text().splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            args = [a for a in line.split()[1:] if not a.startswith("--")]
            sources.extend(args[:-1])
    return sources


@pytest.fixture(scope="module")
def context() -> list[str]:
    return build_context(REPO)


def test_context_keeps_data_caches_and_venvs_out(context: list[str]) -> None:
    banned = re.compile(
        r"(^|/)(\.git|\.venv[^/]*|__pycache__|\.pytest_cache|\.ruff_cache|mlruns)(/|$)"
        r"|^data/|\.dvc/cache/|\.(zip|tar|tgz|pyc|pth)$"
    )
    leaked = [path for path in context if banned.search(path)]
    assert not leaked, f".dockerignore lets these into the build context: {leaked[:10]}"
    size = sum((REPO / p).stat().st_size for p in context if p != "models/model.onnx")
    assert size < 5_000_000, f"build context is {size / 1e6:.1f} MB without the model"


def test_context_ignores_a_dataset_and_venv_dropped_into_the_repo(tmp_path: Path) -> None:
    for rel in (
        "service/app.py",
        "data/raw/train/cat.1.jpg",
        "data/clean/images.zip",
        ".venv-serve/bin/python",
        "shared/data/x.zip",
        "models/best_model.pth",
        "models/model.onnx",
        "service/__pycache__/a.pyc",
        "dvc.yaml",
        "params.yaml",
        ".dvc/config",
        ".dvc/cache/files/md5/ab",
        "scripts/docker-train.sh",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    assert build_context(tmp_path) == sorted(
        ["service/app.py", "models/model.onnx", "dvc.yaml", "params.yaml", ".dvc/config", "scripts/docker-train.sh"]
    )


@pytest.mark.parametrize("dockerfile", ["Dockerfile.serve", "Dockerfile.train"])
def test_every_copy_source_is_in_the_context(dockerfile: str, context: list[str]) -> None:
    for source in copy_sources(dockerfile):
        if source == ".":
            continue
        if source == "models/model.onnx" and not (REPO / source).exists():
            pytest.fail("models/model.onnx is not in the repo: the serve image bundles it (run `dvc repro`)")
        if "*" in source:
            continue  # optional glob (models/metrics.json*)
        prefix = source.rstrip("/")
        assert any(p == prefix or p.startswith(prefix + "/") for p in context), (
            f"{dockerfile} copies {source}, which .dockerignore leaves out"
        )


def test_train_context_has_the_pipeline(context: list[str]) -> None:
    for needed in ("dvc.yaml", "params.yaml", ".dvc/config", "scripts/docker-train.sh", "requirements/train.txt"):
        assert needed in context, f"{needed} missing from the build context"
    assert any(p.startswith("training/") for p in context) and any(p.startswith("export/") for p in context)


def test_train_entrypoint_points_dvc_at_the_mounted_data(context: list[str], tmp_path: Path) -> None:
    """Run scripts/docker-train.sh in a copy of the build context (the image's /app,
    no .git) with `dvc repro --dry`: the data override and SCM-less DVC must work."""
    app = tmp_path / "app"
    for rel in context:
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, app / rel)
    data = tmp_path / "data"
    data.mkdir()
    (data / "mini.zip").write_bytes((REPO / "deploy" / "samples" / "cat.jpg").read_bytes())  # any file: --dry
    env = {
        **os.environ,
        "APP_DIR": str(app),
        "DATA_SOURCE": str(data / "mini.zip"),
        "PARAMS": "train.epochs=1 train.max_train_images=64",
        "OUTPUT_DIR": str(tmp_path / "out"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    proc = subprocess.run(
        ["sh", str(app / "scripts" / "docker-train.sh"), "--dry", "ingest"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    params = yaml.safe_load((app / "params.yaml").read_text())
    assert params["data"]["source"] == str(data / "mini.zip")
    assert params["train"]["epochs"] == 1 and params["train"]["max_train_images"] == 64
    assert "Running stage 'ingest'" in proc.stdout + proc.stderr
    assert (tmp_path / "out").is_dir()

    bad = subprocess.run(
        ["sh", str(app / "scripts" / "docker-train.sh")],
        cwd=app,
        capture_output=True,
        text=True,
        env={**env, "DATA_SOURCE": str(data / "missing.zip")},
        timeout=60,
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr
    typo = subprocess.run(
        ["sh", str(app / "scripts" / "docker-train.sh"), "--dry"],
        cwd=app,
        capture_output=True,
        text=True,
        env={**env, "PARAMS": "train.epoch=1"},
        timeout=60,
    )
    assert typo.returncode != 0 and "unknown parameter 'train.epoch'" in typo.stderr
