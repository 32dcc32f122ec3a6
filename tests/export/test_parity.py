"""The export parity gate passes a faithful export and fails a broken one."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import export.export
from export.export import export_model, stamp_metadata, to_onnx
from export.parity import check_parity
from service.metadata import INPUT_NAME, ModelMetadata
from service.model import SessionTuning, load_model
from service.preprocessing import PreprocessSpec, preprocess
from tests.helpers.paths import MINI_ZIP
from training.calibration import served_probabilities
from training.model import WithSoftmax, build_model

pytestmark = pytest.mark.slow

SPEC = PreprocessSpec(image_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@pytest.fixture(scope="module")
def real_images() -> list[tuple[str, bytes]]:
    assert MINI_ZIP.exists(), f"{MINI_ZIP} is missing: parity is checked on real photos"
    with zipfile.ZipFile(MINI_ZIP) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))[::15][:64]
        return [(name, archive.read(name)) for name in names]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model(2, width=8, dropout=0.1)
    # Non-trivial BatchNorm statistics, so a graph that drops them would be caught.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return WithSoftmax(net).eval()


@pytest.fixture(scope="module")
def graph(model: torch.nn.Module) -> onnx.ModelProto:
    return to_onnx(model, SPEC.image_size, opset=18)


@pytest.fixture
def save(graph: onnx.ModelProto, tmp_path: Path):
    def _save(spec: PreprocessSpec) -> Path:
        proto = onnx.ModelProto()
        proto.CopyFrom(graph)
        stamp_metadata(proto, ModelMetadata(("cat", "dog"), spec, "test", "test"))
        onnx.save(proto, tmp_path / "m.onnx")
        return tmp_path / "m.onnx"

    return _save


def test_faithful_export_passes_parity(model, real_images, save) -> None:
    report = check_parity(model, SPEC, save(SPEC), real_images, atol=1e-4)
    assert report.passed, report
    assert report.images == 64
    assert report.max_abs_diff < 1e-5


def test_exported_graph_names_no_file_of_the_machine_that_exported_it(model, graph) -> None:
    """The exporter's stack traces named the checkout and the venv, so each clone exported another version."""
    exported = graph.SerializeToString()
    for place in (Path(export.export.__file__).parent.parent, Path(torch.__file__).parent):
        assert str(place).encode() not in exported, place
    assert b'File "' not in exported
    assert to_onnx(model, SPEC.image_size, opset=18).SerializeToString() == exported


def test_export_with_wrong_normalisation_fails_parity(model, real_images, save) -> None:
    wrong = dataclasses.replace(SPEC, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    report = check_parity(model, SPEC, save(wrong), real_images, atol=1e-4)
    assert not report.passed
    assert report.max_abs_diff > 1e-4


def test_export_with_different_weights_fails_parity(model, real_images, save) -> None:
    onnx_path = save(SPEC)
    drifted = WithSoftmax(build_model(2, width=8, dropout=0.1)).eval()
    drifted.load_state_dict(model.state_dict())
    with torch.no_grad():
        drifted.net.head[1].bias.add_(torch.tensor([0.3, -0.3]))
    report = check_parity(drifted, SPEC, onnx_path, real_images, atol=1e-4)
    assert not report.passed


def test_flip_tta_export_passes_parity_and_serves_mirror_invariant_probabilities(
    model, real_images, tmp_path: Path
) -> None:
    tta = WithSoftmax(model.net, flip_tta=True).eval()
    proto = to_onnx(tta, SPEC.image_size, opset=18)
    stamp_metadata(proto, ModelMetadata(("cat", "dog"), SPEC, "test", "test"))
    onnx.save(proto, tmp_path / "tta.onnx")
    report = check_parity(tta, SPEC, tmp_path / "tta.onnx", real_images, atol=1e-4)
    assert report.passed, report

    session = ort.InferenceSession(tmp_path / "tta.onnx", providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).standard_normal((3, 3, SPEC.image_size, SPEC.image_size), dtype=np.float32)
    probabilities = session.run(None, {INPUT_NAME: batch})[0]
    mirrored = session.run(None, {INPUT_NAME: np.ascontiguousarray(batch[..., ::-1])})[0]
    single = session.run(None, {INPUT_NAME: batch[:1]})[0]
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(mirrored, probabilities, atol=1e-6)
    np.testing.assert_allclose(single, probabilities[:1], atol=1e-6)
    assert not np.allclose(probabilities, session.run(None, {INPUT_NAME: batch[::-1].copy()})[0])


def test_parity_with_no_images_never_passes(model, save) -> None:
    report = check_parity(model, SPEC, save(SPEC), [], atol=1e-4)
    assert not report.passed


def _write_stage_inputs(model: torch.nn.Module, real_images: list[tuple[str, bytes]]) -> None:
    """What the export stage reads, in the working directory: images.zip, split.csv (all val) and best.pth."""
    with zipfile.ZipFile("images.zip", "w") as archive:
        for name, data in real_images:
            archive.writestr(name, data)
    labels = ["dog" if "dog" in name.lower() else "cat" for name, _ in real_images]
    Path("split.csv").write_text(
        "path,label,sha256,split\n"
        + "".join(
            f"{name},{label},{i:064x},val\n"
            for i, ((name, _), label) in enumerate(zip(real_images, labels, strict=True))
        )
    )
    torch.save(
        {
            "state_dict": model.net.state_dict(),
            "classes": ["cat", "dog"],
            "model": {"arch": "cnn", "pretrained": False, "frozen_blocks": 0, "width": 8, "dropout": 0.1},
            "preprocessing": SPEC.to_json(),
            "epoch": 1,
            "val_accuracy": 0.5,
            "data_version": "d",
        },
        "best.pth",
    )


def _export_stage(dest: Path, calibrate: bool = False) -> dict:
    """The export stage on what _write_stage_inputs wrote: opset 18, 64 parity images, atol 1e-4."""
    return export_model(
        Path("best.pth"),
        dest,
        Path("parity.json"),
        18,
        64,
        1e-4,
        flip_tta=False,
        images_zip=Path("images.zip"),
        split_csv=Path("split.csv"),
        calibrate=calibrate,
    )


def test_calibrated_export_serves_softmax_of_logits_over_the_fitted_temperature(
    model, real_images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _write_stage_inputs(model, real_images)
    report = _export_stage(Path("model.onnx"), calibrate=True)
    assert report["passed"] is True and report["calibration_images"] == len(real_images)
    temperature = report["temperature"]
    assert temperature != 1.0 and report["val_nll_after"] < report["val_nll_before"]
    served = load_model(Path("model.onnx"), SessionTuning())
    assert served.metadata.metrics["temperature"] == temperature
    batch = np.concatenate([preprocess(data, SPEC) for _, data in real_images[:8]])
    with torch.no_grad():
        logits = model.net(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(served.predict(batch), served_probabilities(logits[None], temperature), atol=1e-5)


def test_export_stage_with_broken_normalisation_fails_and_keeps_previous_model(
    model, real_images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _write_stage_inputs(model, real_images)
    previous = Path("model.onnx")
    previous.write_bytes(b"previous model")
    real_stamp = export.export.stamp_metadata

    def stamp_wrong_normalisation(proto, metadata):
        broken = dataclasses.replace(metadata.preprocessing, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        real_stamp(proto, dataclasses.replace(metadata, preprocessing=broken))

    monkeypatch.setattr("export.export.stamp_metadata", stamp_wrong_normalisation)
    report = _export_stage(previous)
    assert report["passed"] is False
    assert previous.read_bytes() == b"previous model"
    assert json.loads(Path("parity.json").read_text())["passed"] is False
