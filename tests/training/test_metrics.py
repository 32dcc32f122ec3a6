"""Evaluation metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import classification_report, roc_curve


def test_perfect_classifier_scores_one() -> None:
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    report = classification_report(labels, probabilities, ["cat", "dog"])
    assert report["accuracy"] == 1.0
    assert report["roc_auc"] == 1.0
    assert report["confusion_matrix"]["matrix"] == [[2, 0], [0, 2]]


def test_per_class_precision_recall_f1_and_log_loss() -> None:
    labels = np.array([0, 0, 0, 1])
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.8, 0.2], [0.2, 0.8]])
    report = classification_report(labels, probabilities, ["cat", "dog"])
    cat, dog = report["per_class"]["cat"], report["per_class"]["dog"]
    assert cat["recall"] == pytest.approx(2 / 3) and cat["precision"] == 1.0
    assert dog["recall"] == 1.0 and dog["precision"] == pytest.approx(0.5)
    assert dog["f1"] == pytest.approx(2 / 3)
    assert report["accuracy"] == 0.75
    expected_loss = -np.mean(np.log([0.9, 0.4, 0.8, 0.8]))
    assert report["log_loss"] == pytest.approx(expected_loss)
    assert report["confusion_matrix"]["matrix"] == [[2, 1], [0, 1]]


def test_roc_auc_matches_pairwise_ranking_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) * 0.5 + labels * 0.3, 2)  # rounded: many ties
    fpr, tpr, _ = roc_curve(labels == 1, scores)
    positives, negatives = scores[labels == 1], scores[labels == 0]
    wins = (positives[:, None] > negatives[None, :]).mean() + 0.5 * (positives[:, None] == negatives[None, :]).mean()
    assert np.trapezoid(tpr, fpr) == pytest.approx(wins)
    assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0
