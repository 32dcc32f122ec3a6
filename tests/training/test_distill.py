"""The distillation loss: the known KL at a temperature, and the plain recipe when its weight is 0."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from training.distill import Objective, distillation_loss
from training.errors import ParamsError


def test_distillation_loss_is_t_squared_kl_between_the_softened_distributions() -> None:
    logits = torch.tensor([[2.0, 0.0]])
    teacher = torch.tensor([[0.8, 0.2]])
    t = 2.0
    # Teacher softened: softmax(log p / T) = sqrt(p) normalised; student: softmax(z / T).
    p = torch.tensor([math.sqrt(0.8), math.sqrt(0.2)])
    p = p / p.sum()
    q = torch.softmax(logits[0] / t, 0)
    expected = t**2 * float((p * (p / q).log()).sum())
    assert distillation_loss(logits, teacher, t).item() == pytest.approx(expected, rel=1e-5)


def test_distillation_loss_is_zero_when_the_student_matches_the_teacher() -> None:
    teacher = torch.tensor([[0.7, 0.3], [0.1, 0.9]])
    assert distillation_loss(teacher.log(), teacher, 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_weight_zero_is_the_label_smoothed_cross_entropy_alone() -> None:
    logits, labels = torch.randn(8, 2, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 2
    plain = F.cross_entropy(logits, labels, label_smoothing=0.1)
    assert torch.equal(Objective(0.1, 0.0, 2.0)(logits, labels, None), plain)


def test_weight_mixes_cross_entropy_and_distillation() -> None:
    logits, labels = torch.randn(8, 2, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 2
    teacher = torch.softmax(torch.randn(8, 2, generator=torch.Generator().manual_seed(2)), 1)
    mixed = Objective(0.0, 0.25, 2.0)(logits, labels, teacher)
    expected = 0.75 * F.cross_entropy(logits, labels) + 0.25 * distillation_loss(logits, teacher, 2.0)
    torch.testing.assert_close(mixed, expected)


@pytest.mark.parametrize(("weight", "temperature", "message"), [(1.5, 2.0, "distill_weight"), (0.5, 0.0, "positive")])
def test_impossible_distillation_params_are_refused(weight: float, temperature: float, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        Objective(0.1, weight, temperature)
