"""Temperature scaling: one scalar T that divides the logits so confidences match accuracy.

Fitted on the validation split after training (never on test), by minimising the negative
log-likelihood of what the exported graph serves. T > 0 never changes the argmax, so accuracy
and the quantize guard's agreement are untouched; only the confidences move.
"""

from __future__ import annotations

import math

import numpy as np

# Bracket for log T: far wider than any trained net needs (label smoothing gives T ~ 0.5-0.8).
LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def served_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """logits: (views, N, C), one slice per view the graph averages (2 with flip TTA, else 1)."""
    scaled = logits.astype(np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=-1, keepdims=True)).mean(axis=0)


def served_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    picked = served_probabilities(logits, temperature)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, tolerance: float = 1e-5) -> float:
    """The T minimising served NLL, by golden-section search on log T.

    For one view the NLL is convex in 1/T, hence unimodal in log T, so the search finds the
    minimum; with flip TTA (a mean of two softmaxes) it is unimodal in practice.
    """
    if logits.ndim != 3 or logits.shape[1] != len(labels) or len(labels) == 0:
        raise ValueError(f"need logits (views, N, C) for N > 0 labels, got {logits.shape} for {len(labels)}")
    low, high = LOG_T_BOUNDS
    a, b = high - GOLDEN * (high - low), low + GOLDEN * (high - low)
    fa, fb = served_nll(logits, labels, math.exp(a)), served_nll(logits, labels, math.exp(b))
    while high - low > tolerance:
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - GOLDEN * (high - low)
            fa = served_nll(logits, labels, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + GOLDEN * (high - low)
            fb = served_nll(logits, labels, math.exp(b))
    return math.exp((low + high) / 2.0)
