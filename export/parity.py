"""The parity gate: the ONNX file must equal the PyTorch model on real images.

Both sides start from the same image bytes. PyTorch gets them through the
preprocessing recorded in the checkpoint (params.yaml at training time);
onnxruntime gets them through the preprocessing read back from the ONNX
file's own metadata, exactly as the service does. A wrong graph, wrong
weights or wrong metadata (say, a different normalisation) all fail here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from service.model import SessionTuning, load_model
from service.preprocessing import PreprocessSpec, preprocess


@dataclass(frozen=True)
class ParityReport:
    images: int
    class_mismatches: int
    max_abs_diff: float
    atol: float
    worst_image: str

    @property
    def passed(self) -> bool:
        return self.images > 0 and self.class_mismatches == 0 and self.max_abs_diff <= self.atol

    def as_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "images": self.images,
            "class_mismatches": self.class_mismatches,
            "max_abs_diff": self.max_abs_diff,
            "atol": self.atol,
            "worst_image": self.worst_image,
        }


def check_parity(
    torch_model: nn.Module,
    torch_spec: PreprocessSpec,
    onnx_path: Path,
    images: list[tuple[str, bytes]],
    atol: float,
) -> ParityReport:
    """torch_model must return probabilities (see training.model.WithSoftmax)."""
    served = load_model(onnx_path, SessionTuning())  # the service's own loader and checks
    torch_model.eval()
    mismatches, worst_diff, worst_name = 0, 0.0, ""
    for name, data in images:
        with torch.no_grad():
            expected = torch_model(torch.from_numpy(preprocess(data, torch_spec))).numpy()[0]
        actual = served.predict(preprocess(data, served.metadata.preprocessing))[0]
        diff = float(np.abs(expected - actual).max())
        mismatches += int(expected.argmax() != actual.argmax())
        if diff >= worst_diff:
            worst_diff, worst_name = diff, name
    return ParityReport(len(images), mismatches, worst_diff, atol, worst_name)
