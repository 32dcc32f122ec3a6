"""mixup (Zhang et al., 2018) on a batch already on the device: pure functions of their inputs.

Each image becomes share · itself + (1 − share) · a partner from the same batch, with one
share ~ Beta(α, α) per batch; the loss mixes the two rows' targets with the same share.
"""

from __future__ import annotations

import numpy as np
import torch


def mixing_share(alpha: float, rng: np.random.Generator) -> float:
    """The batch's own-image weight: Beta(α, α), folded to ≥ 0.5 so the given label stays the dominant one."""
    share = float(rng.beta(alpha, alpha))
    return max(share, 1.0 - share)


def mix(x: torch.Tensor, share: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(mixed batch, partner row of each image): a random permutation of the batch, drawn on its device."""
    partner = torch.randperm(len(x), generator=generator, device=x.device)
    return x * share + x[partner] * (1.0 - share), partner
