"""Stage: score the served ONNX model on the test split.

    python -m training.evaluate MODEL IMAGES_ZIP SPLIT_CSV METRICS REPORT PREDICTIONS ROC MISCLASSIFIED RELIABILITY
    (dvc.yaml passes the paths)

Runs the exported ONNX file with onnxruntime and the preprocessing read from
its own metadata, starting from the original image bytes: the served model,
measured the way it is served.

METRICS holds the figures that decide between models, one flat row (`dvc metrics
show` needs about 180 columns; `make exps` picks the ones that fit 120); every
other figure is in REPORT.
Calibration (ECE, log loss) is reported as served and as it was before the
export's temperature, recovered from the served probabilities.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
from tqdm import tqdm

from service.metadata import ModelMetadata
from service.model import SessionTuning, load_model
from service.preprocessing import preprocess
from training.cli import run_stage, stage_parser
from training.dataset import split_images
from training.metrics import (
    before_temperature,
    classification_report,
    expected_calibration_error,
    log_loss,
    reliability_bins,
    roc_curve,
)
from training.params import Params, load_params
from training.release import MIB, release_failures
from training.tracking import failure_marks_run, reopened_run, train_run_id

BATCH = 128

log = logging.getLogger("evaluate")


def predict_images(model_path: Path, images: list[bytes]) -> tuple[ModelMetadata, np.ndarray]:
    model = load_model(model_path, SessionTuning())  # the service's own loader and checks
    metadata = model.metadata
    outputs = []
    for start in tqdm(range(0, len(images), BATCH), desc="evaluate", unit="batch"):
        batch = np.concatenate([preprocess(data, metadata.preprocessing) for data in images[start : start + BATCH]])
        outputs.append(model.predict(batch))
    return metadata, np.concatenate(outputs)


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def headline(report: dict, metadata: ModelMetadata, model_bytes: int) -> dict:
    """The figures that decide between models and the release bar reads: one flat row in `dvc metrics show`."""
    return {
        "accuracy": report["accuracy"],
        **{f"{name}_accuracy": figures["accuracy"] for name, figures in report["per_class"].items()},
        "roc_auc": report["roc_auc"],
        "ece": round(report["ece"], 5),
        "ece_before": round(report["calibration"]["ece_before"], 5),
        "log_loss": round(report["log_loss"], 5),
        "log_loss_before": round(report["calibration"]["log_loss_before"], 5),
        "temperature": report["calibration"]["temperature"],
        "val_accuracy": metadata.metrics.get("val_accuracy"),  # the checkpoint's, recorded at export
        "model_mb": round(model_bytes / MIB, 2),
        "format": "int8" if metadata.quantization else "fp32",
    }


def calibration_report(labels: np.ndarray, probabilities: np.ndarray, temperature: float) -> dict:
    """ECE and log loss without the export's temperature, next to the reliability diagram's points both ways."""
    before = before_temperature(probabilities, temperature)
    return {
        "temperature": temperature,
        "ece_before": expected_calibration_error(labels, before),
        "log_loss_before": log_loss(labels, before),
        "reliability": reliability_bins(labels, probabilities),
        "reliability_before": reliability_bins(labels, before),
    }


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


@dataclass(frozen=True)
class EvalOutputs:
    metrics: Path  # the one DVC metrics file: headline figures
    report: Path  # every figure: per-class P/R/F1, log loss, confusion matrix, versions
    predictions: Path
    roc: Path
    misclassified: Path
    reliability: Path


def track(report: dict, headline_figures: dict, model: Path, params: Params, outputs: EvalOutputs) -> str | None:
    """Add the test figures and the ONNX file to the model's MLflow run and register it; returns the version.

    The champion alias moves to the new version only when it clears the release bar.
    """
    registry, alias = params.mlflow.registered_model, params.mlflow.champion_alias
    with reopened_run(train_run_id(), "evaluate") as tracker:
        numbers = {key: value for key, value in headline_figures.items() if isinstance(value, int | float)}
        tracker.log_metrics({f"test_{key}": value for key, value in numbers.items()})
        tracker.log_metrics({"test_log_loss": report["log_loss"], "test_macro_f1": report["macro_f1"]})
        for path in (outputs.metrics, outputs.report, outputs.roc, outputs.misclassified, outputs.reliability):
            tracker.log_artifact(path)
        requirements = [f"onnxruntime=={version('onnxruntime')}", f"onnx=={version('onnx')}"]
        uri = tracker.log_onnx_model(model, requirements)
        registered = tracker.register(uri, registry) if uri else None
        if registered is None:
            return None
        failures = release_failures(report, model.stat().st_size, headline_figures["format"], params.release)
        bar = "; ".join(failures) or "passed"
        tracker.tag_version(registry, registered, {"model_version": report["model_version"], "release_bar": bar})
        if failures:
            log.warning(
                "%s version %s misses the release bar (%s); alias %r stays put", registry, registered, bar, alias
            )
        else:
            tracker.set_alias(registry, alias, registered)
            log.info("%s version %s clears the release bar; alias %r now points to it", registry, registered, alias)
        return registered


def arguments() -> argparse.ArgumentParser:
    parser = stage_parser("training.evaluate", __doc__)
    parser.add_argument("model", type=Path, help="the ONNX file to score, as served")
    parser.add_argument("images_zip", type=Path, help="the kept images ingest wrote")
    parser.add_argument("split_csv", type=Path, help="the split assignment split wrote")
    parser.add_argument("metrics", type=Path, help="JSON to write: the headline figures")
    parser.add_argument("report", type=Path, help="JSON to write: every figure")
    parser.add_argument("predictions", type=Path, help="CSV to write: one row per test image")
    parser.add_argument("roc", type=Path, help="CSV to write: the ROC curve")
    parser.add_argument("misclassified", type=Path, help="JSON to write: the most confident mistakes")
    parser.add_argument("reliability", type=Path, help="CSV to write: the reliability diagram (15 confidence bins)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments().parse_args(argv)
    model = args.model
    outputs = EvalOutputs(args.metrics, args.report, args.predictions, args.roc, args.misclassified, args.reliability)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    test = split_images("test", images_zip=args.images_zip, split_csv=args.split_csv)
    metadata, probabilities = predict_images(model, [image.data for image in test])
    classes = list(metadata.classes)
    labels = np.array([classes.index(image.label) for image in test])
    report = classification_report(labels, probabilities, classes)
    # Models exported before calibration existed carry no temperature: theirs is 1.
    temperature = float(metadata.metrics.get("temperature", 1.0))
    report |= {
        "model_version": metadata.model_version,
        "data_version": metadata.data_version,
        "calibration": calibration_report(labels, probabilities, temperature),
    }
    write_json(outputs.report, report)
    figures = headline(report, metadata, model.stat().st_size)
    write_json(outputs.metrics, figures)

    predicted = probabilities.argmax(1)
    write_csv(
        outputs.predictions,
        ["path", "actual", "predicted", f"p_{classes[-1]}"],
        [
            [img.path, img.label, classes[p], round(float(prob[-1]), 6)]
            for img, p, prob in zip(test, predicted, probabilities, strict=True)
        ],
    )
    fpr, tpr, thresholds = roc_curve(labels == len(classes) - 1, probabilities[:, -1])
    write_csv(
        outputs.roc,
        ["fpr", "tpr", "threshold"],
        [
            [round(float(f), 6), round(float(t), 6), float(min(th, 1.0))]
            for f, t, th in zip(fpr, tpr, thresholds, strict=True)
        ],
    )
    columns = ["confidence", "accuracy", "images", "lower", "upper"]
    write_csv(outputs.reliability, columns, [[b[c] for c in columns] for b in report["calibration"]["reliability"]])
    wrong = np.flatnonzero(predicted != labels)
    confident_mistakes = sorted(wrong, key=lambda i: -probabilities[i].max())[:20]
    write_json(
        outputs.misclassified,
        [
            {
                "path": test[i].path,
                "actual": test[i].label,
                "predicted": classes[predicted[i]],
                "confidence": round(float(probabilities[i].max()), 4),
            }
            for i in confident_mistakes
        ],
    )
    print(json.dumps({k: report[k] for k in ("accuracy", "roc_auc", "log_loss", "ece", "macro_f1")}))
    track(report, figures, model, params, outputs)


if __name__ == "__main__":
    with failure_marks_run("evaluate"):
        run_stage(main)
