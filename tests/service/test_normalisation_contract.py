"""The one contract: the service normalises with the mean/std stored in the model file, exactly.

The toy model here carries a non-ImageNet mean/std and its output depends on every channel's
normalised values (their means and their squares), so any other scale, shift or channel order
changes the probabilities. Expected values are computed by hand with numpy, not with the
service's normalize().
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image
from starlette.testclient import TestClient

from service.app import create_app
from service.metadata import ModelMetadata
from service.preprocessing import PreprocessSpec, normalize, resize_to_input
from tests.helpers.service_app import make_settings

SIZE = 16
MEAN = (0.30, 0.55, 0.70)
STD = (0.20, 0.35, 0.15)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# logit(class 0) = W · [mean x_R, mean x_G, mean x_B, mean x_R², mean x_G², mean x_B²] + 0.1; class 1 stays 0.
# The squares make each channel's mean and std separately visible in the output.
WEIGHTS = np.array([[0.5, -0.4, 0.3, -0.2, 0.15, -0.1], [0.0] * 6])
BIAS = np.array([0.1, 0.0])


def test_normalize_matches_values_worked_out_by_hand() -> None:
    spec = PreprocessSpec(image_size=2, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    pixels = np.array([[[255, 0, 51], [0, 255, 102]], [[51, 102, 255], [204, 153, 0]]], dtype=np.uint8)  # HWC
    # R: 2v/255 - 1, G: 4v/255 - 1, B: v/510 (51/255 = 0.2, 102/255 = 0.4, 153/255 = 0.6, 204/255 = 0.8)
    by_hand = np.array(
        [
            [[1.0, -1.0], [-0.6, 0.6]],
            [[-1.0, 3.0], [0.6, 1.4]],
            [[0.1, 0.2], [0.5, 0.0]],
        ]
    )
    single = normalize(pixels, spec)
    assert single.dtype == np.float32 and single.shape == (1, 3, 2, 2) and single.flags.c_contiguous
    np.testing.assert_allclose(single[0], by_hand, atol=1e-6)
    batch = normalize(np.stack([pixels, 255 - pixels]), spec)
    assert batch.shape == (2, 3, 2, 2)
    np.testing.assert_allclose(batch[0], by_hand, atol=1e-6)
    np.testing.assert_allclose(batch[1, 0], -by_hand[0], atol=1e-6)  # 255 - v flips R's sign: 2(255-v)/255 - 1


def build_squares_model(path: Path) -> Path:
    """image -> [image, image²] -> GlobalAveragePool -> Gemm(6 -> 2) -> Softmax, non-ImageNet metadata."""
    nodes = [
        helper.make_node("Mul", ["image", "image"], ["squared"]),
        helper.make_node("Concat", ["image", "squared"], ["features"], axis=1),
        helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "squares",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=[
            helper.make_tensor("W", TensorProto.FLOAT, [2, 6], WEIGHTS.flatten().tolist()),
            helper.make_tensor("B", TensorProto.FLOAT, [2], BIAS.tolist()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    spec = PreprocessSpec(image_size=SIZE, mean=MEAN, std=STD)
    helper.set_model_props(model, ModelMetadata(("cat", "dog"), spec, "squares", "data-test").to_props())
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def by_hand(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """What the squares model returns for uint8 HWC pixels, in float64, without the service's code."""
    x = (pixels.astype(np.float64) / 255.0 - np.array(mean)) / np.array(std)
    features = np.concatenate([x.mean(axis=(0, 1)), (x**2).mean(axis=(0, 1))])
    logits = WEIGHTS @ features + BIAS
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def sample_images() -> list[np.ndarray]:
    """Model-sized pixels (no resize, lossless PNG), each channel drawn from its own range."""
    rng = np.random.default_rng(7)
    images = []
    for _ in range(6):
        low = rng.integers(0, 200, 3)
        high = low + rng.integers(20, 256 - low)
        images.append(rng.integers(low, high, (SIZE, SIZE, 3)).astype(np.uint8))
    images.append(np.full((SIZE, SIZE, 3), (250, 10, 128), dtype=np.uint8))
    return images


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def squares_client(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = build_squares_model(tmp_path_factory.mktemp("squares") / "model.onnx")
    with TestClient(create_app(make_settings(path))) as client:
        yield client


def test_the_toy_model_tells_other_normalisations_apart() -> None:
    """Guards the fixture: ImageNet values, no normalisation or BGR order must all move some output."""
    images = sample_images()
    files = np.array([by_hand(p, MEAN, STD)[0] for p in images])
    alternatives = {
        "imagenet": ([by_hand(p, IMAGENET_MEAN, IMAGENET_STD)[0] for p in images]),
        "none": ([by_hand(p, (0, 0, 0), (1, 1, 1))[0] for p in images]),
        "bgr": ([by_hand(p[..., ::-1], MEAN, STD)[0] for p in images]),
        "mean only": ([by_hand(p, MEAN, (1, 1, 1))[0] for p in images]),
    }
    for name, probabilities in alternatives.items():
        assert np.abs(np.array(probabilities) - files).max() > 0.05, name
    assert 0.05 < files.min() and files.max() < 0.95, "outputs must stay off the flat ends of the softmax"


def test_predict_uses_exactly_the_model_files_mean_and_std(squares_client: TestClient) -> None:
    for pixels in sample_images():
        response = squares_client.post("/predict", files={"file": ("x.png", png(pixels), "image/png")})
        assert response.status_code == 200, response.text
        served = response.json()["probabilities"]
        expected = by_hand(pixels, MEAN, STD)
        assert served["cat"] == pytest.approx(expected[0], abs=1e-5)
        assert served["dog"] == pytest.approx(expected[1], abs=1e-5)


def test_batch_predict_uses_exactly_the_model_files_mean_and_std(squares_client: TestClient) -> None:
    images = sample_images()
    files = [("file", (f"{i}.png", png(pixels), "image/png")) for i, pixels in enumerate(images)]
    results = squares_client.post("/predict/batch", files=files).json()["results"]
    for pixels, result in zip(images, results, strict=True):
        assert result["status"] == 200
        assert result["probabilities"]["cat"] == pytest.approx(by_hand(pixels, MEAN, STD)[0], abs=1e-5)


def test_model_file_and_model_endpoint_state_the_same_preprocessing(squares_client: TestClient, tmp_path: Path) -> None:
    """What another runtime reading the file, or a client reading GET /model, needs to reproduce the input."""
    stated = {
        "image_size": SIZE,
        "mean": list(MEAN),
        "std": list(STD),
        "resize": "squash-bilinear",
        "layout": "NCHW",
        "scale": "1/255",
    }
    props = {p.key: p.value for p in onnx.load(build_squares_model(tmp_path / "model.onnx")).metadata_props}
    assert json.loads(props["preprocessing"]) == stated
    assert squares_client.get("/model").json()["preprocessing"] == stated


def test_resize_squashes_bilinearly_as_worked_out_by_hand() -> None:
    """2x1 black|white to 4x4: samples at x = -0.25, 0.25, 0.75, 1.25 give 0, 63.75, 191.25, 255."""
    two_pixels = Image.fromarray(np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8))
    resized = resize_to_input(two_pixels, 4)
    assert resized.dtype == np.uint8 and resized.shape == (4, 4, 3)
    assert resized[..., 0].tolist() == [[0, 64, 191, 255]] * 4


@pytest.mark.parametrize(
    "image_size,mean,std",
    [(0, [0.5] * 3, [0.5] * 3), (8, [0.5] * 2, [0.5] * 3), (8, [0.5] * 3, [0.5] * 2), (8, [0.5] * 3, [0.5, 0.0, 0.5])],
    ids=["zero-size", "two-means", "two-stds", "zero-std"],
)
def test_a_spec_that_cannot_normalise_is_refused_naming_itself(image_size: int, mean: list, std: list) -> None:  # type: ignore[type-arg]
    text = json.dumps({"image_size": image_size, "mean": mean, "std": std})
    with pytest.raises(ValueError) as refused:
        PreprocessSpec.from_json(text)
    assert str(refused.value) == f"invalid preprocessing spec: {text}"


def test_the_smallest_valid_spec_round_trips() -> None:
    spec = PreprocessSpec(image_size=1, mean=(0.0, 0.5, 1.0), std=(1e-3, 1.0, 2.0))
    assert PreprocessSpec.from_json(spec.to_json()) == spec
