"""Temperature scaling finds the temperature that generated the labels, and serves what it fitted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.calibration import fit_temperature, served_nll, served_probabilities
from training.model import WithSoftmax, build_model


def _labels_drawn_at(temperature: float, logits: np.ndarray, seed: int) -> np.ndarray:
    """Labels sampled from softmax(logits / temperature): the NLL's minimiser is that temperature."""
    probabilities = served_probabilities(logits[None], temperature)
    rng = np.random.default_rng(seed)
    return (rng.random(len(logits)) > probabilities[:, 0]).astype(np.int64)


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_fit_recovers_the_temperature_that_generated_the_labels(true_temperature: float) -> None:
    logits = np.random.default_rng(0).normal(0.0, 4.0, (20_000, 2))
    labels = _labels_drawn_at(true_temperature, logits, seed=1)
    assert fit_temperature(logits[None], labels) == pytest.approx(true_temperature, rel=0.05)


def test_fitted_temperature_minimises_the_served_nll() -> None:
    logits = np.random.default_rng(2).normal(0.0, 3.0, (2, 500, 2))  # two views, as with flip TTA
    labels = _labels_drawn_at(1.7, logits[0], seed=3)
    fitted = fit_temperature(logits, labels)
    best = served_nll(logits, labels, fitted)
    assert best <= served_nll(logits, labels, fitted * 1.05) and best <= served_nll(logits, labels, fitted / 1.05)


def test_fit_refuses_logits_that_do_not_match_the_labels() -> None:
    with pytest.raises(ValueError, match="views, N, C"):
        fit_temperature(np.zeros((10, 2)), np.zeros(10, dtype=np.int64))


@pytest.mark.parametrize("flip_tta", [False, True])
def test_exported_wrapper_serves_softmax_of_logits_over_temperature(flip_tta: bool) -> None:
    torch.manual_seed(0)
    net = build_model(2, width=8, dropout=0.0).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        served = WithSoftmax(net, flip_tta, temperature=0.4)(x).numpy()
        views = torch.stack([net(x), net(x.flip(3))] if flip_tta else [net(x)]).numpy()
    np.testing.assert_allclose(served, served_probabilities(views, 0.4), atol=1e-6)


def test_wrapper_refuses_a_non_positive_temperature() -> None:
    with pytest.raises(ValueError, match="positive"):
        WithSoftmax(build_model(2, width=8, dropout=0.0), temperature=0.0)
