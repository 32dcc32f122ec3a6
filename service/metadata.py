"""What an ONNX model file carries about itself, in its metadata_props.

Export writes these keys; the service reads them. Nothing about the model
(classes, input size, normalisation, version) is hard-coded anywhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from service.preprocessing import PreprocessSpec

INPUT_NAME = "image"  # float32 [N, 3, S, S], output of preprocessing.normalize
OUTPUT_NAME = "probabilities"  # float32 [N, len(classes)], softmax already applied in the graph

REQUIRED_KEYS = ("classes", "preprocessing", "model_version", "data_version")


@dataclass(frozen=True)
class ModelMetadata:
    classes: tuple[str, ...]
    preprocessing: PreprocessSpec
    model_version: str
    data_version: str
    metrics: dict[str, Any] = field(default_factory=dict)  # validation metrics recorded at export
    quantization: dict[str, Any] = field(default_factory=dict)  # empty: fp32; else how the int8 file was made

    def to_props(self) -> dict[str, str]:
        return {
            "classes": json.dumps(list(self.classes)),
            "preprocessing": self.preprocessing.to_json(),
            "model_version": self.model_version,
            "data_version": self.data_version,
            "metrics": json.dumps(self.metrics, sort_keys=True),
            "quantization": json.dumps(self.quantization, sort_keys=True),
        }

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMetadata:
        missing = [key for key in REQUIRED_KEYS if key not in props]
        if missing:
            raise ValueError(f"model metadata lacks {', '.join(missing)}; re-export the model with `dvc repro export`")
        classes = tuple(json.loads(props["classes"]))
        if len(classes) < 2 or not all(isinstance(name, str) and name for name in classes):
            raise ValueError(f"model metadata has invalid classes: {props['classes']}")
        return cls(
            classes=classes,
            preprocessing=PreprocessSpec.from_json(props["preprocessing"]),
            model_version=props["model_version"],
            data_version=props["data_version"],
            metrics=json.loads(props.get("metrics") or "{}"),
            quantization=json.loads(props.get("quantization") or "{}"),
        )
