"""The label-noise audit flags the photos whose label the out-of-fold teacher confidently disputes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.audit import audit, class_thresholds, confident_flags, out_of_fold
from training.errors import ParamsError
from training.params import TeacherParams

CFG = TeacherParams(variant="lite0", image_size=64, flip=False, batch_size=8, threads=1, folds=4, l2=0.1, seed=0)


def test_a_photo_is_flagged_only_when_another_class_clears_its_threshold_and_its_own_does_not() -> None:
    thresholds = np.array([0.8, 0.6])
    labels = np.array([0, 0, 0, 1, 1])
    probabilities = np.array(
        [
            [0.9, 0.1],  # label holds
            [0.3, 0.7],  # dog clears 0.6, cat misses 0.8: flagged as dog
            [0.5, 0.5],  # neither clears: not flagged
            [0.85, 0.15],  # cat clears, dog misses: flagged as cat
            [0.35, 0.65],  # label holds
        ]
    )
    assert confident_flags(labels, probabilities, thresholds).tolist() == [-1, 1, -1, 0, -1]


def test_thresholds_are_each_class_mean_self_confidence() -> None:
    labels = np.array([0, 0, 1])
    probabilities = np.array([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6]])
    np.testing.assert_allclose(class_thresholds(labels, probabilities, 2), [0.8, 0.6])


def _clusters(n: int, flipped: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two well-separated Gaussian clusters; the first `flipped` photos of each carry the other label."""
    rng = np.random.default_rng(seed)
    truth = np.repeat([0, 1], n)
    features = rng.normal(0, 1, (2 * n, 16)) + truth[:, None] * 4.0
    labels = truth.copy()
    noisy = np.r_[np.arange(flipped), n + np.arange(flipped)]
    labels[noisy] = 1 - labels[noisy]
    return features, labels, noisy


def test_out_of_fold_probabilities_dispute_flipped_labels() -> None:
    features, labels, noisy = _clusters(100, flipped=5, seed=0)
    probabilities = out_of_fold(features, labels, 2, CFG)
    # A model that had seen a flipped photo's label could memorise it; the out-of-fold one cannot.
    assert (probabilities[noisy, labels[noisy]] < 0.5).all()
    flags = confident_flags(labels, probabilities, class_thresholds(labels, probabilities, 2))
    assert set(np.flatnonzero(flags >= 0)) == set(noisy)


def test_audit_writes_every_train_and_val_photo_and_flags_without_relabelling(tmp_path: Path) -> None:
    features, labels, noisy = _clusters(60, flipped=3, seed=1)
    split = np.where(np.arange(120) % 60 < 48, "train", "val")
    path = tmp_path / "features.npz"
    np.savez(
        path,
        path=np.array([f"img/{i}.jpg" for i in range(120)]),
        label=labels,
        split=split,
        features=features.astype(np.float32),
        classes=np.array(["cat", "dog"]),
    )
    rows, summary = audit(path, CFG)
    assert [row["path"] for row in rows] == [f"img/{i}.jpg" for i in range(120)]
    assert [row["label"] for row in rows] == [["cat", "dog"][label] for label in labels]  # labels as given
    flagged = {int(row["path"][4:-4]) for row in rows if row["flagged"]}
    assert flagged == set(noisy)  # all flipped photos sit in the train part (index % 60 < 3)
    assert summary["train_photos"] == 96 and summary["val_photos"] == 24
    assert summary["train_flagged"] == 6 and summary["val_flagged"] == 0
    assert summary["val_log_loss"] < 0.1 and summary["train_oof_accuracy"] == 0.9375  # 6 flipped of 96
    assert all(abs(row["p_cat"] + row["p_dog"] - 1) < 1e-9 for row in rows)


def test_more_folds_than_photos_of_a_class_is_refused_with_the_fix(tmp_path: Path) -> None:
    features, labels, _ = _clusters(3, flipped=0, seed=2)
    path = tmp_path / "features.npz"
    np.savez(
        path,
        path=np.array([f"{i}.jpg" for i in range(6)]),
        label=labels,
        split=np.array(["train"] * 6),
        features=features,
        classes=np.array(["cat", "dog"]),
    )
    with pytest.raises(ParamsError, match="teacher.folds must be between 2 and"):
        audit(path, CFG)
