"""An exponential moving average of a model's weights that never waits on the GPU.

torch's AveragedModel keeps its step count in a tensor and reads or copies it on
every update, which on CUDA stalls the host until the device has caught up, once
per step. This one keeps the same state dict (`module.*`, `n_averaged`), so
checkpoints load either way, but its count stays on the host.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage(nn.Module):
    """EMA of weights and BatchNorm statistics, warmed up so the fresh head's random start fades fast.

    The first update copies the model; update n (n >= 1) moves each float tensor towards
    the model's by 1 - min(decay, (1 + n) / (10 + n)); integer buffers (BatchNorm's batch
    counters) are copied.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.module = copy.deepcopy(model)
        self.decay = decay
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long))

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        averaged = [*self.module.parameters(), *self.module.buffers()]
        current = [*model.parameters(), *model.buffers()]
        n = int(self.n_averaged)  # a host tensor: no device sync
        if n == 0:
            torch._foreach_copy_(averaged, current)
        else:
            pairs = list(zip(averaged, current, strict=True))
            floats = [pair for pair in pairs if pair[0].is_floating_point()]
            rate = 1 - min(self.decay, (1 + n) / (10 + n))
            torch._foreach_lerp_([mine for mine, _ in floats], [theirs for _, theirs in floats], rate)
            for mine, theirs in pairs:
                if not mine.is_floating_point():
                    mine.copy_(theirs)
        self.n_averaged += 1
