"""Accuracy against training minutes for a few model sizes and resolutions (docs/sweep.md).

    .venv/bin/python scripts/sweep.py                 # run every point not yet run, then print the table
    .venv/bin/python scripts/sweep.py --only s64c56   # run one point
    .venv/bin/python scripts/sweep.py --table         # just print the table from finished experiments

Each point is `dvc exp run --temp` of the whole pipeline on the full archive with
the committed params.yaml plus the point's overrides, so a row is exactly what
`dvc repro` with those values would give. Rows report validation accuracy (the
test split stays untouched until the chosen recipe's final evaluation) and the
training stage's own clock, taken from reports/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = (REPO.parent / "shared" / "data" / "dogs-vs-cats-20k.zip").resolve()

# name -> overrides of params.yaml; names encode eval size (s), crop size (c), width (w), epochs (e).
POINTS: dict[str, dict[str, object]] = {
    "s64c64w16e12": {"preprocess.image_size": 64, "train.crop_size": 64, "model.width": 16, "train.epochs": 12},
    "s64c56w16e12": {"preprocess.image_size": 64, "train.crop_size": 56, "model.width": 16, "train.epochs": 12},
    "s80c64w16e12": {"preprocess.image_size": 80, "train.crop_size": 64, "model.width": 16, "train.epochs": 12},
    "s64c64w24e12": {"preprocess.image_size": 64, "train.crop_size": 64, "model.width": 24, "train.epochs": 12},
}


def dvc(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["dvc", *args], cwd=REPO, env=env, text=True, capture_output=True, check=False)


def finished() -> dict[str, dict]:
    """Experiment name -> {"params": ..., "train": reports/train.json} for every finished experiment."""
    shown = dvc("exp", "show", "--json", "-A")
    if shown.returncode != 0:
        raise SystemExit(f"dvc exp show failed: {shown.stderr.strip()}")
    results = {}
    for commit in json.loads(shown.stdout):
        for experiment in commit.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                data = rev.get("data") or {}
                train = (data.get("metrics") or {}).get("reports/train.json", {}).get("data")
                params = (data.get("params") or {}).get("params.yaml", {}).get("data")
                if rev.get("name") and train and params:
                    results[rev["name"]] = {"params": params, "train": train}
    return results


def run_point(name: str, overrides: dict[str, object]) -> None:
    args = ["exp", "run", "--temp", "-n", name, "-S", f"data.source={ARCHIVE}"]
    for key, value in overrides.items():
        args += ["-S", f"{key}={value}"]
    print(f"running {name}: {' '.join(args)}", flush=True)
    result = dvc(*args)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def table(results: dict[str, dict]) -> str:
    lines = [
        "| point | eval px | crop px | width | epochs | train min | images/s | best val acc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result in sorted(results.items(), key=lambda item: item[1]["train"]["train_seconds"]):
        p, t = result["params"], result["train"]
        crop = p["train"].get("crop_size") or p["preprocess"]["image_size"]
        lines.append(
            f"| {name} | {p['preprocess']['image_size']} | {crop} | {p['model']['width']} | {p['train']['epochs']} "
            f"| {t['train_seconds'] / 60:.1f} | {t['images_per_second']:.0f} | {100 * t['best_val_accuracy']:.2f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(POINTS), action="append", help="run just these points")
    parser.add_argument("--table", action="store_true", help="print the table, run nothing")
    args = parser.parse_args()
    if not ARCHIVE.exists():
        raise SystemExit(f"{ARCHIVE} not found: the sweep reads the full 20k archive beside the repo")
    if not args.table:
        done = finished()
        for name in args.only or POINTS:
            if name not in done:
                run_point(name, POINTS[name])
    results = finished()
    print(table({name: result for name, result in results.items() if name in POINTS}))


if __name__ == "__main__":
    main()
