"""Stage: score models/model.onnx on the test split. `python -m training.evaluate`

Runs the exported ONNX file with onnxruntime and the preprocessing read from
its own metadata, starting from the original image bytes: the served model,
measured the way it is served.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from service.metadata import ModelMetadata
from service.model import SessionTuning, load_model
from service.preprocessing import preprocess
from training.dataset import split_images
from training.metrics import classification_report, roc_curve

ONNX_MODEL = Path("models/model.onnx")
METRICS = Path("models/metrics.json")
EVAL_DIR = Path("reports/eval")
BATCH = 128


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


def main() -> None:
    test = split_images("test")
    metadata, probabilities = predict_images(ONNX_MODEL, [image.data for image in test])
    classes = list(metadata.classes)
    labels = np.array([classes.index(image.label) for image in test])
    report = classification_report(labels, probabilities, classes)
    report |= {"model_version": metadata.model_version, "data_version": metadata.data_version}
    METRICS.write_text(json.dumps(report, indent=2) + "\n")

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
    (EVAL_DIR / "misclassified.json").write_text(
        json.dumps(
            [
                {
                    "path": test[i].path,
                    "actual": test[i].label,
                    "predicted": classes[predicted[i]],
                    "confidence": round(float(probabilities[i].max()), 4),
                }
                for i in confident_mistakes
            ],
            indent=2,
        )
        + "\n"
    )
    print(json.dumps({k: report[k] for k in ("accuracy", "roc_auc", "log_loss", "macro_f1")}))


if __name__ == "__main__":
    main()
