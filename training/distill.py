"""The teacher's soft labels for the training photos, and the loss that learns from them.

The audit stage writes out-of-fold teacher probabilities (data/teacher/soft_labels.csv): each
training photo's come from a teacher fitted without its label, so distilling from them never
just echoes the label, and a photo the teacher confidently disputes carries its flag.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from training.errors import MissingInputError, ParamsError


@dataclass(frozen=True)
class SoftLabels:
    """One row per training photo, in the prepared train cache's order."""

    probabilities: np.ndarray  # (N, C) float32
    flagged: np.ndarray  # (N,) bool


def load_soft_labels(path: Path, classes: tuple[str, ...], labels: np.ndarray) -> SoftLabels:
    """The training rows of `path`, checked against the prepared train split's labels (same photos, same order)."""
    if not path.is_file():
        raise MissingInputError(f"{path} is missing; run `dvc repro audit`")
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "train"]
    given = np.array([classes.index(row["label"]) for row in rows], dtype=np.int64)
    if len(given) != len(labels) or not np.array_equal(given, labels):
        raise MissingInputError(
            f"{path} does not describe the prepared training photos ({len(given)} rows for {len(labels)} photos); "
            "run `dvc repro audit` after the split changes"
        )
    probabilities = np.array([[float(row[f"p_{name}"]) for name in classes] for row in rows], dtype=np.float32)
    flagged = np.array([row["flagged"] == "True" for row in rows], dtype=bool)
    return SoftLabels(probabilities, flagged)


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student), both softened by T (Hinton et al., 2015); the teacher given as probabilities.

    softmax(log p / T) softens probabilities as softmax(z / T) softens logits; T^2 keeps the
    gradient's scale independent of T.
    """
    soft_teacher = torch.softmax(torch.log(teacher.clamp_min(1e-8)) / temperature, dim=1)
    log_student = F.log_softmax(logits / temperature, dim=1)
    return F.kl_div(log_student, soft_teacher, reduction="batchmean") * temperature**2


@dataclass(frozen=True)
class Objective:
    """Label-smoothed cross-entropy, mixed with distillation from the teacher when `weight` > 0."""

    label_smoothing: float
    weight: float
    temperature: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ParamsError(f"train.distill_weight must be in [0, 1], got {self.weight}")
        if not self.temperature > 0:
            raise ParamsError(f"train.distill_temperature must be positive, got {self.temperature}")

    @property
    def needs_teacher(self) -> bool:
        return self.weight > 0

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
        hard = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        if not self.needs_teacher:
            return hard
        if teacher is None:
            raise ValueError("distillation needs the teacher's probabilities for every batch")
        return (1 - self.weight) * hard + self.weight * distillation_loss(logits, teacher, self.temperature)
