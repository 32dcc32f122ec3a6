"""The host-counted weight average: torch's AveragedModel's numbers and state dict, without its device reads."""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel

from training.average import WeightAverage
from training.model import build_model

DECAY = 0.99


def _reference(model: torch.nn.Module) -> AveragedModel:
    """The same warmed-up EMA through torch's AveragedModel (which reads its step count from a tensor)."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], steps: torch.Tensor) -> None:
        n = steps.item()
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1 - min(DECAY, (1 + n) / (10 + n)))
        else:
            torch._foreach_copy_(averaged, current)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def test_weight_average_equals_torchs_averaged_model_and_loads_its_state() -> None:
    torch.manual_seed(0)
    model = build_model(2, width=8, dropout=0.0)
    ours, reference = WeightAverage(model, DECAY), _reference(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(12):
        loss = model(torch.randn(4, 3, 32, 32)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ours.update_parameters(model)
        reference.update_parameters(model)
    theirs = reference.state_dict()
    assert list(ours.state_dict()) == list(theirs)
    for name, value in ours.state_dict().items():
        assert torch.equal(value, theirs[name]), name
    assert not torch.equal(ours.module.head[1].weight, model.head[1].weight), "the average lags the model"
    restored = WeightAverage(model, DECAY)
    restored.load_state_dict(theirs)
    assert int(restored.n_averaged) == 12
