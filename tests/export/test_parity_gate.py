"""The parity gate's own rules, each on its own: class mismatches, the tolerance, the worst image,
and what the export entry point does with a failed gate.

The models here are one-liners whose outputs are known in advance: probabilities =
softmax([scale * mean(image) + shift, 0]), built once in torch and once with onnx.helper.
"""

from __future__ import annotations

import inspect
import io
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image
from torch import nn

import export.export
from export.parity import ParityReport, check_parity
from service.metadata import ModelMetadata
from service.model import SessionTuning, load_model
from service.preprocessing import PreprocessSpec
from tests.helpers.pipeline import stage_args
from training.params import load_params

ARGS = stage_args("export")  # the stage's paths, as dvc.yaml passes them
PATHS = export.export.arguments().parse_args(ARGS)
SPEC = PreprocessSpec(image_size=8, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


class MeanLogit(nn.Module):
    def __init__(self, scale: float, shift: float) -> None:
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = x.mean(dim=(1, 2, 3)) * self.scale + self.shift
        return torch.softmax(torch.stack([logit, torch.zeros_like(logit)], dim=1), dim=1)


def mean_logit_onnx(path: Path, scale: float, shift: float) -> Path:
    size = SPEC.image_size
    nodes = [
        helper.make_node("ReduceMean", ["image", "axes"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "shift"], ["logit"]),
        helper.make_node("Unsqueeze", ["logit", "last"], ["column"]),
        helper.make_node("Mul", ["column", "zero"], ["zeros"]),
        helper.make_node("Concat", ["column", "zeros"], ["logits"], axis=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mean-logit",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
            helper.make_tensor("scale", TensorProto.FLOAT, [], [scale]),
            helper.make_tensor("shift", TensorProto.FLOAT, [], [shift]),
            helper.make_tensor("last", TensorProto.INT64, [1], [1]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    helper.set_model_props(model, ModelMetadata(("cat", "dog"), SPEC, "test", "test").to_props())
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def solid_png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


# Mean normalised value: black ≈ -2.0, white ≈ +2.4, so white is the image furthest from zero.
IMAGES = [(f"grey-{v}.png", solid_png(v)) for v in (0, 90, 255, 140, 200)]


def test_a_class_flip_inside_the_tolerance_fails_parity(tmp_path: Path) -> None:
    """Both sides sit within 5e-5 of 0.5 but on opposite sides of it: every argmax differs."""
    onnx_path = mean_logit_onnx(tmp_path / "m.onnx", scale=0.0, shift=1e-4)
    report = check_parity(MeanLogit(scale=0.0, shift=-1e-4), SPEC, onnx_path, IMAGES, atol=1e-4)
    assert report.max_abs_diff <= report.atol, "this case must be inside the tolerance"
    assert report.class_mismatches == len(IMAGES)
    assert not report.passed


def test_equal_models_pass_and_the_report_names_the_image_that_differs_most(tmp_path: Path) -> None:
    onnx_path = mean_logit_onnx(tmp_path / "m.onnx", scale=0.1, shift=0.0)
    same = check_parity(MeanLogit(scale=0.1, shift=0.0), SPEC, onnx_path, IMAGES, atol=1e-4)
    assert same.passed and same.class_mismatches == 0 and same.images == len(IMAGES)
    assert same.max_abs_diff < 1e-6
    # A 0.1% larger scale moves each output by about 0.25 * 0.0001 * |mean|: most for the white image.
    drifted = check_parity(MeanLogit(scale=0.1001, shift=0.0), SPEC, onnx_path, IMAGES, atol=1e-4)
    assert drifted.worst_image == "grey-255.png"
    assert drifted.max_abs_diff == pytest.approx(0.25 * 0.0001 * 2.44, rel=0.05)
    assert drifted.class_mismatches == 0 and drifted.passed


def test_a_perfect_export_still_names_an_image_and_no_images_name_none(tmp_path: Path) -> None:
    onnx_path = mean_logit_onnx(tmp_path / "m.onnx", scale=0.0, shift=0.0)  # both sides exactly 0.5
    perfect = check_parity(MeanLogit(scale=0.0, shift=0.0), SPEC, onnx_path, IMAGES, atol=1e-4)
    assert perfect.max_abs_diff == 0.0 and perfect.worst_image in {name for name, _ in IMAGES}
    empty = check_parity(MeanLogit(scale=0.0, shift=0.0), SPEC, onnx_path, [], atol=1e-4)
    assert (empty.images, empty.worst_image, empty.passed) == (0, "", False)


def test_a_difference_over_the_tolerance_fails_without_any_class_flip(tmp_path: Path) -> None:
    onnx_path = mean_logit_onnx(tmp_path / "m.onnx", scale=0.1, shift=0.0)
    report = check_parity(MeanLogit(scale=0.15, shift=0.0), SPEC, onnx_path, IMAGES, atol=1e-4)
    assert report.class_mismatches == 0 and report.max_abs_diff > 1e-4
    assert not report.passed


@pytest.mark.parametrize(
    "images,mismatches,diff,passed",
    [
        (1, 0, 1e-4, True),  # the tolerance itself is allowed
        (1, 0, 0.0, True),
        (1, 0, 1.0001e-4, False),
        (64, 1, 0.0, False),
        (0, 0, 0.0, False),  # no evidence is not a pass
    ],
)
def test_parity_report_passes_only_with_images_no_flips_and_diff_within_tolerance(
    images: int, mismatches: int, diff: float, passed: bool
) -> None:
    report = ParityReport(images, mismatches, diff, 1e-4, "x.jpg")
    assert report.passed is passed
    assert report.as_dict() == {
        "passed": passed,
        "images": images,
        "class_mismatches": mismatches,
        "max_abs_diff": diff,
        "atol": 1e-4,
        "worst_image": "x.jpg",
    }


def stage_report(parity: ParityReport) -> dict[str, object]:
    """What export_model returns: the gate's verdict plus what it records about the file."""
    fitted = {"temperature": 0.7, "calibration_images": 2000, "val_nll_before": 0.2, "val_nll_after": 0.1}
    return parity.as_dict() | {"model_version": "m", "opset": 18, "flip_tta": False, "bytes": 13_000_000} | fitted


def failing_report() -> dict[str, object]:
    return stage_report(ParityReport(64, 3, 2.5e-3, 1e-4, "cat/abc.jpg"))


@pytest.fixture
def export_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with the repo's params.yaml, as `dvc repro export` gives the stage."""
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text((Path(export.export.__file__).parents[1] / "params.yaml").read_text())
    return tmp_path


def fake_stage(report: dict[str, object], calls: list[inspect.BoundArguments]):  # type: ignore[no-untyped-def]
    """Stands in for export_model: records what main() asked for and returns `report`."""
    signature = inspect.signature(export.export.export_model)  # the real stage's, taken before it is patched

    def export_model(*args: object, **kwargs: object) -> dict[str, object]:
        calls.append(signature.bind(*args, **kwargs))
        return report

    return export_model


def assert_asked_for_params_yaml_gate(calls: list[inspect.BoundArguments]) -> None:
    """main() must hand the stage params.yaml's own tolerance and image count, and the stage's paths."""
    (call,) = calls
    cfg = load_params().export
    assert call.arguments["best_model"] == PATHS.best_model
    assert call.arguments["dest"] == PATHS.onnx_model
    assert call.arguments["report_path"] == PATHS.parity_report
    assert call.arguments["images_zip"] == PATHS.images_zip and call.arguments["split_csv"] == PATHS.split_csv
    assert call.arguments["atol"] == cfg.parity_atol and call.arguments["parity_images"] == cfg.parity_images
    assert call.arguments["opset"] == cfg.opset and call.arguments["flip_tta"] == cfg.flip_tta
    assert call.arguments["calibrate"] == cfg.calibrate


def test_export_main_exits_1_and_says_why_when_the_gate_fails(
    export_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[inspect.BoundArguments] = []
    monkeypatch.setattr(export.export, "export_model", fake_stage(failing_report(), calls))
    caplog.set_level(logging.INFO)
    with pytest.raises(SystemExit) as exit_info:
        export.export.main(ARGS)
    assert exit_info.value.code == 1
    assert_asked_for_params_yaml_gate(calls)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert line == (
        "parity gate FAILED: 3 class mismatches, max |diff| 2.50e-03 > 1e-04 (worst: cat/abc.jpg). "
        f"{PATHS.onnx_model} left unchanged."
    )
    assert not [r for r in caplog.records if "parity passed" in r.getMessage()]


def test_export_main_returns_normally_when_the_gate_passes(
    export_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[inspect.BoundArguments] = []
    passing = stage_report(ParityReport(64, 0, 3e-7, 1e-4, "cat/abc.jpg"))
    monkeypatch.setattr(export.export, "export_model", fake_stage(passing, calls))
    tracked: list[Path] = []
    monkeypatch.setattr(export.export, "track", lambda report, cfg, report_path: tracked.append(report_path))
    caplog.set_level(logging.INFO)
    export.export.main(ARGS)
    assert_asked_for_params_yaml_gate(calls)
    assert tracked == [PATHS.parity_report]  # the gate's report is what the model's MLflow run keeps
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    (line,) = [r.getMessage() for r in caplog.records if "parity passed" in r.getMessage()]
    assert line == f"parity passed on 64 images (max |diff| 3.00e-07); temperature 0.7; wrote {PATHS.onnx_model}"


def test_export_main_prints_its_verdict_on_the_console_without_onnx_chatter(
    export_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `dvc repro` shows: the stage's own INFO lines, and none of the exporter libraries' INFO chatter."""
    passing = stage_report(ParityReport(64, 0, 3e-7, 1e-4, "cat/abc.jpg"))
    monkeypatch.setattr(export.export, "export_model", fake_stage(passing, []))
    # As in a fresh `python -m export.export`: the root logger has no handler yet (pytest installs its own).
    monkeypatch.setattr(logging.root, "handlers", [])
    monkeypatch.setattr(logging.root, "level", logging.WARNING)
    for chatty in ("onnx_ir", "onnxscript"):
        monkeypatch.setattr(logging.getLogger(chatty), "level", logging.NOTSET)
    export.export.main(ARGS)
    logging.getLogger("onnx_ir.passes").info("chatter")
    logging.getLogger("onnxscript.rewriter").info("chatter")
    console = capsys.readouterr().err.splitlines()
    assert [line for line in console if "parity" in line] == [
        f"INFO export: parity passed on 64 images (max |diff| 3.00e-07); temperature 0.7; wrote {PATHS.onnx_model}"
    ]
    assert not [line for line in console if "chatter" in line]


def test_mean_logit_models_agree_on_their_formula(tmp_path: Path) -> None:
    """The two builders above are the same function: checked once on a known input."""
    x = np.full((1, 3, SPEC.image_size, SPEC.image_size), 2.0, dtype=np.float32)
    expected = np.exp(0.5) / (np.exp(0.5) + 1.0)  # softmax([0.2 * 2 + 0.1, 0])[0]
    torch_p = MeanLogit(0.2, 0.1)(torch.from_numpy(x)).numpy()[0, 0]
    onnx_p = load_model(mean_logit_onnx(tmp_path / "m.onnx", 0.2, 0.1), SessionTuning()).predict(x)[0, 0]
    assert torch_p == pytest.approx(expected, abs=1e-6) and onnx_p == pytest.approx(expected, abs=1e-6)
