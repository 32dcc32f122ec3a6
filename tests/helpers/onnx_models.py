"""Tiny ONNX models built with onnx.helper that honour the service's contract (input 'image',
output 'probabilities', metadata_props), so no test needs a trained model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from service.metadata import INPUT_NAME, OUTPUT_NAME, ModelMetadata
from service.preprocessing import PreprocessSpec

IMAGE_SIZE = 32
SPEC = PreprocessSpec(image_size=IMAGE_SIZE, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
TOY_VERSION = "toy-ops-1"


def build_model(
    path: Path,
    *,
    version: str = "v1",
    classes: tuple[str, str] = ("cat", "dog"),
    softmax: bool = True,
    metrics: dict[str, float] | None = None,
) -> Path:
    """image [N,3,S,S] -> GlobalAveragePool -> Flatten -> Gemm(3->2) -> Softmax.

    The weights score red minus blue, so a red image is classes[0] and a blue one classes[1].
    """
    weights = np.array([[0.5, 0.0, -0.5], [-0.5, 0.0, 0.5]], dtype=np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits" if softmax else "probabilities"], transB=1),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "tiny-colour",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=[
            helper.make_tensor("W", TensorProto.FLOAT, [2, 3], weights.flatten().tolist()),
            helper.make_tensor("B", TensorProto.FLOAT, [2], [0.0, 0.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelMetadata(
        classes=classes,
        preprocessing=SPEC,
        model_version=version,
        data_version="data-test",
        metrics=metrics if metrics is not None else {"val_accuracy": 0.91},
    )
    helper.set_model_props(model, meta.to_props())
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def build_toy_model(path: Path, *, image_size: int = 32, scale: float = 4.0) -> Path:
    """A model honouring the service's contract (input 'image', output 'probabilities',
    metadata_props) that says 'cat' for reddish images and 'dog' for bluish ones:
    logits = scale * [mean(R) - mean(B), mean(B) - mean(R)] of the normalised input."""
    weights = np.array([[1.0, -1.0], [0.0, 0.0], [-1.0, 1.0]], dtype=np.float32) * scale
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", [INPUT_NAME], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=1),
        ],
        "toy_catsdogs",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, image_size, image_size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor("w", TensorProto.FLOAT, [3, 2], weights.flatten().tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelMetadata(
        classes=("cat", "dog"),
        preprocessing=PreprocessSpec(image_size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        model_version=TOY_VERSION,
        data_version="synthetic",
    )
    for key, value in meta.to_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def swap_model(served: Path, **kwargs: object) -> None:
    """Replace the model file a server serves with a new `build_model`, by atomic rename as a deploy would."""
    staged = build_model(served.parent / "staged" / "model.onnx", **kwargs)  # type: ignore[arg-type]
    shutil.copy(staged, served.parent / "incoming.onnx")
    (served.parent / "incoming.onnx").replace(served)
