"""Made-up model answers with a known accuracy and calibration, for tests of the reports and bars built on them."""

from __future__ import annotations

import numpy as np


def answers(per_class: int, right_per_class: int, confidence: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels and [cat, dog] probabilities for `per_class` photos of each class, the first `right_per_class`
    of each answered right, every answer given with `confidence` (default: the accuracy itself, so the
    answers are perfectly calibrated)."""
    labels = np.repeat([0, 1], per_class)
    top = right_per_class / per_class if confidence is None else confidence
    confident = np.where(np.arange(2 * per_class) % per_class < right_per_class, top, 1 - top)
    dog = np.where(labels == 1, confident, 1 - confident)
    return labels, np.stack([1 - dog, dog], axis=1)
