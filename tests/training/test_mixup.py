"""mixup: each image mixed with one partner of its batch, and the loss mixed with the same share."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from training.distill import Objective
from training.mixup import mix, mixing_share
from training.train import Batch


def test_shares_are_beta_draws_folded_to_the_own_image() -> None:
    rng = np.random.default_rng(0)
    shares = [mixing_share(2.0, rng) for _ in range(4000)]
    assert min(shares) >= 0.5 and max(shares) <= 1.0
    # E max(B, 1 - B) for B ~ Beta(2, 2), density 6b(1 - b): 2 * integral over [1/2, 1] of 6b^2(1 - b) = 11/16.
    assert np.mean(shares) == pytest.approx(11 / 16, abs=0.01)
    assert [mixing_share(0.4, np.random.default_rng(3)) for _ in range(2)] == [
        mixing_share(0.4, np.random.default_rng(3))
    ] * 2


def test_each_image_is_mixed_with_its_partner_by_the_share() -> None:
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 2, 2).contiguous()
    mixed, partner = mix(x, 0.75, torch.Generator().manual_seed(0))
    assert sorted(partner.tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(mixed, 0.75 * x + 0.25 * x[partner])


def test_a_mixed_batch_loss_mixes_both_rows_targets() -> None:
    logits = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    y, partner = torch.tensor([0, 1, 0, 1]), torch.tensor([1, 0, 3, 2])
    objective = Objective(0.0, 0.0, 2.0)
    loss = Batch(logits, y, None, partner, 0.7).loss(objective, logits)
    expected = 0.7 * F.cross_entropy(logits, y) + 0.3 * F.cross_entropy(logits, y[partner])
    torch.testing.assert_close(loss, expected)
    assert torch.equal(Batch(logits, y).loss(objective, logits), F.cross_entropy(logits, y))
