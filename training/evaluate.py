"""Stage: score models/model.onnx on the test split. `python -m training.evaluate`

Runs the exported ONNX file with onnxruntime and the preprocessing read from
its own metadata, starting from the original image bytes: the served model,
measured the way it is served.

models/metrics.json holds the headline figures only, so that `dvc metrics show`
and `dvc exp show` stay readable in a terminal; every other figure is in
reports/eval/report.json.
"""

from __future__ import annotations

import csv
import json
import logging
from importlib.metadata import version
from pathlib import Path

import numpy as np
from tqdm import tqdm

from service.metadata import ModelMetadata
from service.model import SessionTuning, load_model
from service.preprocessing import preprocess
from training.dataset import split_images
from training.metrics import classification_report, roc_curve
from training.params import Params, load_params
from training.release import MIB, release_failures
from training.tracking import failure_marks_run, reopened_run, train_run_id

ONNX_MODEL = Path("models/model.onnx")
METRICS = Path("models/metrics.json")  # the one DVC metrics file: headline figures
EVAL_DIR = Path("reports/eval")
REPORT = EVAL_DIR / "report.json"  # every figure: per-class P/R/F1, log loss, confusion matrix, versions
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
    """The figures that decide between models; short flat keys keep `dvc metrics show` under 120 columns."""
    return {
        "accuracy": report["accuracy"],
        **{f"{name}_accuracy": figures["accuracy"] for name, figures in report["per_class"].items()},
        "roc_auc": report["roc_auc"],
        "val_accuracy": metadata.metrics.get("val_accuracy"),  # the checkpoint's, recorded at export
        "model_mb": round(model_bytes / MIB, 2),
        "format": "int8" if metadata.quantization else "fp32",
    }


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


def track(report: dict, headline_figures: dict, model: Path, params: Params) -> str | None:
    """Add the test figures and the ONNX file to the model's MLflow run and register it; returns the version.

    The champion alias moves to the new version only when it clears the release bar.
    """
    registry, alias = params.mlflow.registered_model, params.mlflow.champion_alias
    with reopened_run(train_run_id(), "evaluate") as tracker:
        numbers = {key: value for key, value in headline_figures.items() if isinstance(value, int | float)}
        tracker.log_metrics({f"test_{key}": value for key, value in numbers.items()})
        tracker.log_metrics({"test_log_loss": report["log_loss"], "test_macro_f1": report["macro_f1"]})
        for path in (METRICS, REPORT, EVAL_DIR / "roc.csv", EVAL_DIR / "misclassified.json"):
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


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    test = split_images("test")
    metadata, probabilities = predict_images(ONNX_MODEL, [image.data for image in test])
    classes = list(metadata.classes)
    labels = np.array([classes.index(image.label) for image in test])
    report = classification_report(labels, probabilities, classes)
    report |= {"model_version": metadata.model_version, "data_version": metadata.data_version}
    write_json(REPORT, report)
    figures = headline(report, metadata, ONNX_MODEL.stat().st_size)
    write_json(METRICS, figures)

    predicted = probabilities.argmax(1)
    write_csv(
        EVAL_DIR / "predictions.csv",
        ["path", "actual", "predicted", f"p_{classes[-1]}"],
        [
            [img.path, img.label, classes[p], round(float(prob[-1]), 6)]
            for img, p, prob in zip(test, predicted, probabilities, strict=True)
        ],
    )
    fpr, tpr, thresholds = roc_curve(labels == len(classes) - 1, probabilities[:, -1])
    write_csv(
        EVAL_DIR / "roc.csv",
        ["fpr", "tpr", "threshold"],
        [
            [round(float(f), 6), round(float(t), 6), float(min(th, 1.0))]
            for f, t, th in zip(fpr, tpr, thresholds, strict=True)
        ],
    )
    wrong = np.flatnonzero(predicted != labels)
    confident_mistakes = sorted(wrong, key=lambda i: -probabilities[i].max())[:20]
    write_json(
        EVAL_DIR / "misclassified.json",
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
    print(json.dumps({k: report[k] for k in ("accuracy", "roc_auc", "log_loss", "macro_f1")}))
    track(report, figures, ONNX_MODEL, params)


if __name__ == "__main__":
    with failure_marks_run("evaluate"):
        main()
