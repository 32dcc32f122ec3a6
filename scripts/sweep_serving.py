"""Test accuracy against one-image cost: serving resolution x int8 x pretrained vs from scratch (docs/model.md).

    .venv/bin/python scripts/sweep_serving.py [--sizes 128 160 192] [--scratch-onnx PATH --scratch-minutes M]

Run after `dvc repro`. Each pretrained point re-exports the trained models/best_model.pth
at one serving size (the network is fully convolutional, so the same weights serve any
size), passes it through the same parity gate and int8 guard as the pipeline, and scores
the file on the test split exactly as the evaluate stage does. The from-scratch point is
an ONNX file of the small cnn (for example the previous bundled model) scored the same way.
Each file's one-image cost comes from benchmarks/bench_model.py's timing loop, every file
timed in interleaved rounds on one thread so the ratios hold on a noisy machine.
Writes docs/sweep_serving.csv and prints a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_model import time_batches  # noqa: E402
from export import quantize  # noqa: E402
from export.export import export_model  # noqa: E402
from service.model import SessionTuning, load_model  # noqa: E402
from service.preprocessing import preprocess  # noqa: E402
from training.dataset import split_images  # noqa: E402
from training.evaluate import predict_images  # noqa: E402
from training.params import load_params  # noqa: E402

OUT_CSV = REPO / "docs" / "sweep_serving.csv"
# The pipeline's own outputs, where dvc.yaml has ingest and split write them.
DATA = {"images_zip": REPO / "data/clean/images.zip", "split_csv": REPO / "data/split.csv"}
COLUMNS = [
    "point",
    "arch",
    "serve_px",
    "precision",
    "int8_agreement",
    "test_accuracy",
    "cat",
    "dog",
    "ms_p50",
    "mb",
    "train_minutes",
]


def score(path: Path) -> dict[str, float]:
    test = split_images("test", **DATA)
    metadata, probabilities = predict_images(path, [image.data for image in test])
    labels = np.array([metadata.classes.index(image.label) for image in test])
    predicted = probabilities.argmax(1)
    per_class = {cls: float((predicted[labels == i] == i).mean()) for i, cls in enumerate(metadata.classes)}
    return {"test_accuracy": float((predicted == labels).mean()), **per_class}


def one_image_ms(paths: list[Path], runs: int) -> list[float]:
    """p50 of 1-image inference per file, timed in interleaved rounds on one thread."""
    models = [load_model(path, SessionTuning(intra_op_threads=1, inter_op_threads=1)) for path in paths]
    sample = (REPO / "deploy" / "samples" / "cat.jpg").read_bytes()
    inputs = [[preprocess(sample, model.metadata.preprocessing)] for model in models]
    timings: list[list[float]] = [[] for _ in models]
    for _ in range(10):
        for i, model in enumerate(models):
            timings[i] += time_batches(model, inputs[i], runs // 10)
    return [statistics.median(t) for t in timings]


def add_points(
    rows: list[dict],
    files: list[Path],
    name: str,
    arch: str,
    size: int,
    fp32: Path,
    int8: Path,
    guard: dict,
    minutes: float | None,
) -> None:
    """The fp32 point, and the int8 point when its guard passed (a refused int8 file is never served)."""
    agreement = guard["guard"]["agreement"]
    for precision, path in (("fp32", fp32), ("int8", int8))[: 2 if guard["served"] == "int8" else 1]:
        rows.append(
            {
                "point": f"{name}-{precision}",
                "arch": arch,
                "serve_px": size,
                "precision": precision,
                "int8_agreement": agreement,
                "train_minutes": minutes,
            }
        )
        files.append(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 160, 192])
    parser.add_argument("--scratch-onnx", type=Path, help="an ONNX file of the from-scratch cnn to compare")
    parser.add_argument("--scratch-minutes", type=float, help="its training minutes (its reports/train.json)")
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()

    params = load_params(REPO / "params.yaml")
    train_minutes = round(json.loads((REPO / "reports/train.json").read_text())["train_seconds"] / 60, 1)
    calibration = [image.data for image in split_images("train", params.quantize.calibration_images, **DATA)]
    validation = split_images("val", **DATA)
    rows, files = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for size in args.sizes:
            fp32, int8 = work / f"fp32_{size}.onnx", work / f"int8_{size}.onnx"
            report = export_model(
                REPO / "models/best_model.pth",
                fp32,
                work / "parity.json",
                params.export.opset,
                params.export.parity_images,
                params.export.parity_atol,
                params.export.flip_tta,
                **DATA,
                calibrate=params.export.calibrate,
                image_size=size,
            )
            assert report["passed"], f"parity failed at {size} px: {report}"
            guard = quantize.run(params.quantize, fp32, int8, work / "quantize.json", calibration, validation)
            add_points(rows, files, f"lite0-{size}", params.model.arch, size, fp32, int8, guard, train_minutes)
        if args.scratch_onnx:
            int8 = work / "scratch_int8.onnx"
            guard = quantize.run(params.quantize, args.scratch_onnx, int8, work / "q.json", calibration, validation)
            size = load_model(args.scratch_onnx, SessionTuning()).image_size
            add_points(rows, files, f"cnn-{size}", "cnn", size, args.scratch_onnx, int8, guard, args.scratch_minutes)
        for row, path in zip(rows, files, strict=True):
            row |= {key: round(value, 4) for key, value in score(path).items()}
            row["mb"] = round(path.stat().st_size / 1e6, 1)
        for row, ms in zip(rows, one_image_ms(files, args.runs), strict=True):
            row["ms_p50"] = round(ms, 2)

    with OUT_CSV.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(
        "| point | serve px | precision | test acc | cat | dog | 1-image ms | MB | int8 agreement (val) | train min |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['point']} | {r['serve_px']} | {r['precision']} | {100 * r['test_accuracy']:.2f}% | "
            f"{100 * r['cat']:.1f}% | {100 * r['dog']:.1f}% | {r['ms_p50']} | {r['mb']} | "
            f"{100 * r['int8_agreement']:.2f}% | {r['train_minutes']} |"
        )


if __name__ == "__main__":
    main()
