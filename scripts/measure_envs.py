#!/usr/bin/env python3
"""Measure the serve and train environments without a Docker engine.

serve: builds the exact venv Dockerfile.serve builds (scripts/build_serve_venv.sh
       from requirements/serve.lock) into a clean temp dir and measures it with du.
       Image estimate = that venv + service/ + bundled model + python:3.11-slim.
train: sums the installed size of every distribution requirements/train.txt
       resolves to in a given environment (default: this interpreter's), with
       PyPI's CUDA torch replaced by the CPU wheel Dockerfile.train installs when
       such a wheel is at hand (--torch-cpu-wheel), and the nvidia-*/triton
       packages only the CUDA build pulls in left out.

    python scripts/measure_envs.py serve [--keep DIR]
    python scripts/measure_envs.py train [--torch-cpu-wheel PATH]

Prints JSON. BASE_IMAGE_MB is an assumption (no engine here to pull the base).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `docker image ls` size of python:3.11-slim (Debian slim + CPython 3.11 + pip),
# amd64, uncompressed. Not measurable here: stated, not measured.
BASE_IMAGE_MB = 130.0
MB = 1_000_000


def du_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            file = Path(dirpath) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def measure_serve(keep: Path | None, python: str) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="serve-venv-"))
    venv = keep or tmp / "venv"
    try:
        subprocess.run(
            ["sh", str(ROOT / "scripts" / "build_serve_venv.sh"), str(venv), python],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        venv_b = du_bytes(venv)
        app_b = sum(
            du_bytes(ROOT / p) if (ROOT / p).is_dir() else (ROOT / p).stat().st_size
            for p in ("service", "deploy/healthcheck.py")
            if (ROOT / p).exists()
        )
        app_b -= sum(du_bytes(d) for d in (ROOT / "service").rglob("__pycache__"))
        model = ROOT / "models" / "model.onnx"
        model_b = model.stat().st_size if model.is_file() else 0
        metrics = ROOT / "models" / "metrics.json"
        model_b += metrics.stat().st_size if metrics.is_file() else 0
        listing = "import importlib.metadata as m; print(*sorted(d.metadata['Name'] for d in m.distributions()))"
        packages = subprocess.run(
            [str(venv / "bin" / "python"), "-c", listing], check=True, capture_output=True, text=True
        ).stdout.split()
        total = BASE_IMAGE_MB * MB + venv_b + app_b + model_b
        return {
            "venv_mb": round(venv_b / MB, 1),
            "app_mb": round(app_b / MB, 2),
            "model_mb": round(model_b / MB, 2),
            "model_bundled": model.is_file(),
            "base_image_mb_assumed": BASE_IMAGE_MB,
            "image_estimate_mb": round(total / MB, 1),
            "packages": packages,
            "venv": str(venv) if keep else None,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def measure_train(torch_cpu_wheel: Path | None) -> dict:
    import importlib.metadata as md

    from packaging.requirements import Requirement

    dists = {_canonical(d.metadata["Name"]): d for d in md.distributions()}
    roots = []
    for line in (ROOT / "requirements" / "train.txt").read_text().splitlines() + (
        ROOT / "requirements" / "serve.txt"
    ).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            roots.append(_canonical(Requirement(line).name))
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen or name not in dists:
            continue
        seen.add(name)
        for raw in dists[name].requires or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(_canonical(req.name))
    cuda_only = {n for n in seen if n.startswith(("nvidia-", "cuda-")) or n == "triton"}
    missing = sorted(set(roots) - seen)

    def installed_size(dist) -> int:
        base = Path(dist.locate_file(""))
        return sum((base / f).stat().st_size for f in (dist.files or []) if (base / f).is_file())

    sizes = {n: installed_size(dists[n]) for n in seen - cuda_only}
    torch_note = "torch as installed here"
    if torch_cpu_wheel and torch_cpu_wheel.is_file() and "torch" in sizes:
        with zipfile.ZipFile(torch_cpu_wheel) as whl:
            sizes["torch"] = sum(i.file_size for i in whl.infolist())
        torch_note = f"torch replaced by the unpacked size of {torch_cpu_wheel.name}"
    venv_b = sum(sizes.values())
    return {
        "venv_mb": round(venv_b / MB, 1),
        "image_estimate_mb": round((BASE_IMAGE_MB * MB + venv_b) / MB, 1),
        "base_image_mb_assumed": BASE_IMAGE_MB,
        "distributions": len(sizes),
        "left_out_cuda_only": sorted(cuda_only),
        "left_out_cuda_only_mb": round(sum(installed_size(dists[n]) for n in cuda_only) / MB, 1),
        "torch": torch_note,
        "largest_mb": {n: round(b / MB, 1) for n, b in sorted(sizes.items(), key=lambda kv: -kv[1])[:8]},
        "not_installed_here": missing,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="env", required=True)
    serve = sub.add_parser("serve", help="build and measure the serve venv")
    serve.add_argument("--keep", type=Path, help="build the venv here and keep it")
    serve.add_argument(
        "--python",
        default=sys.executable if sys.version_info[:2] == (3, 11) else "python3.11",
        help="CPython 3.11 interpreter to build with",
    )
    train = sub.add_parser("train", help="estimate the train env from this interpreter's packages")
    train.add_argument("--torch-cpu-wheel", type=Path, help="a torch +cpu wheel to size torch by")
    args = parser.parse_args()
    if args.env == "serve":
        report = measure_serve(args.keep, args.python)
    else:
        report = measure_train(args.torch_cpu_wheel)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
