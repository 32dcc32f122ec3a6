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
    eps = 1e-7
    picked = np.clip(probabilities[np.arange(len(labels)), labels], eps, 1.0)
    return {
        "accuracy": float((predicted == labels).mean()),
        "per_class": per_class,
        "macro_f1": float(np.mean([m["f1"] for m in per_class.values()])),
        "roc_auc": float(np.trapezoid(tpr, fpr)),
        "log_loss": float(-np.log(picked).mean()),
        "confusion_matrix": {"labels": list(classes), "matrix": confusion.tolist()},
        "images": int(len(labels)),
    }
