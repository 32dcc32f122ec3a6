"""Classification metrics in plain numpy: pure functions of labels and probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def roc_curve(is_positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), one point per distinct score, starting at (0, 0)."""
    order = np.argsort(-scores, kind="stable")
    scores, is_positive = scores[order], is_positive[order].astype(np.float64)
    last_of_run = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tps = np.cumsum(is_positive)[last_of_run]
    fps = (last_of_run + 1) - tps
    tpr = np.r_[0.0, tps / max(tps[-1], 1)]
    fpr = np.r_[0.0, fps / max(fps[-1], 1)]
    return fpr, tpr, np.r_[np.inf, scores[last_of_run]]


def classification_report(labels: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, per-class accuracy/precision/recall/F1, ROC-AUC (last class positive), log loss."""
    predicted = probabilities.argmax(1)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {}
    for index, name in enumerate(classes):
        tp = confusion[index, index]
        support = confusion[index].sum()
        predicted_as = confusion[:, index].sum()
        precision = tp / predicted_as if predicted_as else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "accuracy": float(recall),
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(support),
        }
    fpr, tpr, _ = roc_curve(labels == len(classes) - 1, probabilities[:, -1])
    return {
        "accuracy": float((predicted == labels).mean()),
        "per_class": per_class,
        "macro_f1": float(np.mean([m["f1"] for m in per_class.values()])),
        "roc_auc": float(np.trapezoid(tpr, fpr)),
        "log_loss": log_loss(labels, probabilities),
        "ece": expected_calibration_error(labels, probabilities),
        "confusion_matrix": {"labels": list(classes), "matrix": confusion.tolist()},
        "images": int(len(labels)),
    }


def reliability_bins(labels: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> list[dict]:
    """Equal-width bins on (0, 1] of the top-class confidence: each non-empty bin's mean confidence,
    accuracy and image count, the points of a reliability diagram."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    # A confidence of exactly k/bins belongs to bin k-1, as in the usual (lower, upper] convention.
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        if members.any():
            rows.append(
                {
                    "lower": b / bins,
                    "upper": (b + 1) / bins,
                    "confidence": float(confidence[members].mean()),
                    "accuracy": float(correct[members].mean()),
                    "images": int(members.sum()),
                }
            )
    return rows


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> float:
    """Image-weighted mean |accuracy - confidence| over the equal-width confidence bins."""
    rows = reliability_bins(labels, probabilities, bins)
    return float(sum(row["images"] * abs(row["accuracy"] - row["confidence"]) for row in rows) / len(labels))


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return float(-np.log(picked).mean())


def before_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities the graph would serve without its temperature: softmax(T * log p).

    Exact for one softmax (log p = z/T - const per image); with flip TTA's mean of two
    softmaxes it is an approximation.
    """
    scaled = temperature * np.log(np.clip(probabilities.astype(np.float64), 1e-30, 1.0))
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)
