"""Evaluation metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import (
    before_temperature,
    classification_report,
    expected_calibration_error,
    reliability_bins,
    roc_curve,
)


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


def test_ece_of_a_hand_built_split_weights_each_bin_by_its_images() -> None:
    # Bin (0.6, 0.667]: two images at 0.65 confidence, one right -> |0.5 - 0.65| = 0.15.
    # Bin (0.933, 1]: two images at 0.95, both right -> |1.0 - 0.95| = 0.05. ECE = (2*0.15 + 2*0.05) / 4.
    labels = np.array([0, 1, 0, 1])
    probabilities = np.array([[0.65, 0.35], [0.65, 0.35], [0.95, 0.05], [0.05, 0.95]])
    assert expected_calibration_error(labels, probabilities) == pytest.approx(0.1)
    bins = reliability_bins(labels, probabilities)
    assert [(b["images"], b["accuracy"]) for b in bins] == [(2, 0.5), (2, 1.0)]
    assert bins[0]["lower"] == pytest.approx(9 / 15) and bins[1]["upper"] == 1.0


def test_ece_is_zero_when_confidence_equals_accuracy_in_every_bin() -> None:
    # 10 images at 0.8 confidence, 8 of them right.
    labels = np.array([0] * 8 + [1] * 2)
    probabilities = np.tile([0.8, 0.2], (10, 1))
    assert expected_calibration_error(labels, probabilities) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_an_always_wrong_confident_model_is_its_confidence() -> None:
    labels = np.zeros(5, dtype=int)
    probabilities = np.tile([0.1, 0.9], (5, 1))
    assert expected_calibration_error(labels, probabilities) == pytest.approx(0.9)


def test_a_bin_edge_confidence_falls_in_the_lower_bin() -> None:
    bins = reliability_bins(np.array([0]), np.array([[0.6, 0.4]]))  # 0.6 = 9/15: upper edge of bin 8
    assert bins[0]["upper"] == pytest.approx(9 / 15)


def test_before_temperature_recovers_the_unscaled_softmax_exactly() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (50, 2))
    temperature = 0.6

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    recovered = before_temperature(softmax(logits / temperature).astype(np.float32), temperature)
    np.testing.assert_allclose(recovered, softmax(logits), atol=1e-5)
