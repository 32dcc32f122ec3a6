"""`dvc repro` end to end on the mini archive, in a throwaway copy of the repo."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from PIL import Image

from export import quantize
from service.metadata import ModelMetadata
from service.model import SessionTuning, load_model
from tests.helpers.commands import copy_working_tree, run_checked, venv_env
from tests.helpers.paths import MINI_ZIP, REPO
from tests.helpers.pipeline import TINY_PARAMS, set_params, stage_command
from training.dataset import split_images
from training.params import load_params

pytestmark = pytest.mark.slow


def _copy_from(pipeline: Path, dest: Path, *names: str) -> None:
    """The pipeline's files a single stage reads, so it reruns elsewhere and leaves the pipeline as it was."""
    for name in names:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(pipeline / name, dest / name)


def _run_stage(stage: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A stage's own command as the pipeline runs it; the caller checks the exit status."""
    return subprocess.run(
        stage_command(stage),
        cwd=cwd,
        env=venv_env() | {"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert MINI_ZIP.exists(), f"{MINI_ZIP} is missing: the integration test reads the shared mini archive in place"
    work = tmp_path_factory.mktemp("repo")
    copy_working_tree(work)
    for generated in ("dvc.lock", "models/model.onnx", "models/metrics.json"):
        (work / generated).unlink(missing_ok=True)
    set_params(work / "params.yaml", TINY_PARAMS)
    run_checked(["git", "init", "-q"], work)
    run_checked(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], work)
    run_checked(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"], work)
    run_checked([sys.executable, "-m", "dvc", "repro"], work)
    return work


def test_repro_writes_every_output(pipeline: Path) -> None:
    for output in (
        "data/clean/images.zip",
        "data/clean/manifest.csv",
        "data/split.csv",
        "data/prepared/train_images.npy",
        "models/best_model.pth",
        "models/model_fp32.onnx",
        "models/model.onnx",
        "reports/quantize.json",
        "models/metrics.json",
        "reports/data.json",
        "reports/train.json",
        "reports/train_history.csv",
        "reports/parity.json",
        "reports/eval/roc.csv",
        "reports/eval/predictions.csv",
        "reports/eval/report.json",
        "reports/eval/reliability.csv",
        "data/teacher/features.npz",
        "data/teacher/soft_labels.csv",
        "reports/audit/flagged.csv",
        "reports/audit/summary.json",
        "dvc.lock",
    ):
        assert (pipeline / output).exists(), output
    data = json.loads((pipeline / "reports/data.json").read_text())
    assert data["kept"]["cat"] + data["kept"]["dog"] == data["kept"]["total"] > 900


def test_best_model_loads_weights_only(pipeline: Path) -> None:
    checkpoint = torch.load(pipeline / "models/best_model.pth", weights_only=True)
    assert checkpoint["classes"] == ["cat", "dog"]
    # Two short epochs at 64 px measured 0.76 on the 100 validation photos; chance is 0.5 and one
    # standard error 0.05, so 0.65 fails a run that learned nothing but not a seed's wobble.
    assert checkpoint["val_accuracy"] >= 0.65


def test_parity_gate_passed_on_real_validation_images(pipeline: Path) -> None:
    parity = json.loads((pipeline / "reports/parity.json").read_text())
    assert parity["passed"] is True
    assert parity["images"] >= 64
    assert parity["class_mismatches"] == 0
    assert parity["max_abs_diff"] <= 1e-4


def test_failed_parity_gate_exits_non_zero_and_keeps_the_previous_model(pipeline: Path, tmp_path: Path) -> None:
    """What makes "the gate fails the pipeline" true: the export stage's own exit status.

    The stage reruns on the real checkpoint and validation photos this pipeline made, with a
    tolerance no float32 export can meet, in a separate directory so the pipeline stays as it was.
    """
    _copy_from(pipeline, tmp_path, "params.yaml", "models/best_model.pth", "data/clean/images.zip", "data/split.csv")
    set_params(tmp_path / "params.yaml", {"export": {"parity_atol": 1e-12}})
    previous = tmp_path / "models" / "model_fp32.onnx"
    previous.write_bytes(b"the model that was exported before")
    result = _run_stage("export", tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "parity gate FAILED: 0 class mismatches" in result.stderr
    assert previous.read_bytes() == b"the model that was exported before"
    report = json.loads((tmp_path / "reports" / "parity.json").read_text())
    assert report["passed"] is False and report["images"] == TINY_PARAMS["export"]["parity_images"]
    assert 1e-12 < report["max_abs_diff"] <= 1e-4  # failed on the tolerance alone: the export itself is sound


def test_onnx_carries_the_serving_contract(pipeline: Path) -> None:
    proto = onnx.load(str(pipeline / "models/model.onnx"))
    metadata = ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    assert metadata.classes == ("cat", "dog")
    assert metadata.preprocessing.image_size == 64
    assert metadata.data_version == json.loads((pipeline / "reports/data.json").read_text())["data_version"]
    assert proto.opset_import[0].version >= 17
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param, "batch axis must be dynamic"


def test_metrics_schema(pipeline: Path) -> None:
    metrics = json.loads((pipeline / "models/metrics.json").read_text())
    calibration = {"ece", "ece_before", "log_loss", "log_loss_before", "temperature"}
    assert (
        set(metrics)
        == {"accuracy", "cat_accuracy", "dog_accuracy", "roc_auc", "val_accuracy", "model_mb", "format"} | calibration
    )
    assert metrics["format"] == "int8" and metrics["model_mb"] < 5
    report = json.loads((pipeline / "reports/eval/report.json").read_text())
    for key in ("accuracy", "roc_auc", "log_loss", "macro_f1", "model_version", "data_version"):
        assert key in report, key
    assert set(report["per_class"]) == {"cat", "dog"}
    for name, values in report["per_class"].items():
        assert set(values) >= {"accuracy", "precision", "recall", "f1", "support"}
        assert metrics[f"{name}_accuracy"] == values["accuracy"]
    assert sum(v["support"] for v in report["per_class"].values()) == report["images"] == 100
    # Measured on the 100 test photos: accuracy 0.66, ROC-AUC 0.79; chance gives 0.5 for both.
    assert metrics["accuracy"] == report["accuracy"] >= 0.6 and metrics["roc_auc"] >= 0.7


def test_served_model_carries_the_temperature_export_fitted_on_validation(pipeline: Path) -> None:
    parity = json.loads((pipeline / "reports/parity.json").read_text())
    assert parity["passed"] is True and parity["calibration_images"] == 100
    assert parity["val_nll_after"] <= parity["val_nll_before"]
    served = load_model(pipeline / "models/model.onnx", SessionTuning())
    metrics = json.loads((pipeline / "models/metrics.json").read_text())
    assert served.metadata.metrics["temperature"] == parity["temperature"] == metrics["temperature"] != 1.0
    reliability = (pipeline / "reports/eval/reliability.csv").read_text().splitlines()
    assert reliability[0] == "confidence,accuracy,images,lower,upper"
    assert sum(int(row.split(",")[2]) for row in reliability[1:]) == 100


def test_audit_covers_every_train_and_val_photo_and_never_the_test_split(pipeline: Path) -> None:
    split = (pipeline / "data/split.csv").read_text().splitlines()[1:]
    expected = {row.split(",")[0]: row.split(",")[3] for row in split if not row.endswith(",test")}
    soft = (pipeline / "data/teacher/soft_labels.csv").read_text().splitlines()
    assert soft[0] == "path,split,label,p_cat,p_dog,flagged,suggested"
    assert {row.split(",")[0]: row.split(",")[1] for row in soft[1:]} == expected
    summary = json.loads((pipeline / "reports/audit/summary.json").read_text())
    flagged = (pipeline / "reports/audit/flagged.csv").read_text().splitlines()[1:]
    assert summary["train_flagged"] + summary["val_flagged"] == len(flagged)
    # Frozen ImageNet features at 64 px (Lite2 measured 0.88 on val, 0.79 out of fold); chance is 0.5.
    assert summary["val_accuracy"] >= 0.7 and summary["train_oof_accuracy"] >= 0.7


def test_dvc_metrics_and_plots_commands_work(pipeline: Path) -> None:
    shown = run_checked([sys.executable, "-m", "dvc", "metrics", "show", "--json"], pipeline)
    assert "roc_auc" in shown and "val_accuracy" in shown
    run_checked([sys.executable, "-m", "dvc", "plots", "show", "-o", str(pipeline / "plots_html")], pipeline)
    assert (pipeline / "plots_html" / "index.html").exists()


def test_repro_on_unchanged_workspace_does_nothing(pipeline: Path) -> None:
    out = run_checked([sys.executable, "-m", "dvc", "repro"], pipeline)
    assert "Running stage" not in out, out


def test_training_param_change_reruns_only_train_export_quantize_evaluate(pipeline: Path) -> None:
    set_params(pipeline / "params.yaml", {"train": {"epochs": 1}})
    out = run_checked([sys.executable, "-m", "dvc", "repro"], pipeline)
    ran = {
        stage
        for stage in ("ingest", "split", "prepare", "train", "export", "quantize", "evaluate")
        if f"Running stage '{stage}'" in out
    }
    assert ran == {"train", "export", "quantize", "evaluate"}, out


def test_dvc_exp_run_with_set_param(pipeline: Path) -> None:
    run_checked(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], pipeline)
    run_checked(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "after repro"], pipeline)
    out = run_checked([sys.executable, "-m", "dvc", "exp", "run", "-S", "train.epochs=2"], pipeline)
    assert "Ran experiment" in out, out


def test_quantize_stage_serves_the_int8_file_that_passed_its_guard(pipeline: Path) -> None:
    report = json.loads((pipeline / "reports/quantize.json").read_text())
    guard = report["guard"]
    assert report["served"] == "int8" and guard["passed"] is True
    assert guard["images"] == 100 and guard["agreement"] >= TINY_PARAMS["quantize"]["min_agreement"]
    assert report["refusal"] is None
    assert report["bytes"] < report["fp32_bytes"] / 3  # int8 weights: about a quarter of fp32
    served = load_model(pipeline / "models/model.onnx", SessionTuning())
    assert served.metadata.quantization["format"] == "int8-qdq-per-channel"
    assert served.metadata.quantization["agreement"] == guard["agreement"]
    assert served.metadata.model_version == report["model_version"] != report["fp32_model_version"]
    evaluated = json.loads((pipeline / "reports/eval/report.json").read_text())
    assert evaluated["model_version"] == report["model_version"], "evaluate must score the file that is served"


def test_quantize_guard_fails_on_a_flat_grey_calibration_and_serves_fp32(pipeline: Path, tmp_path: Path) -> None:
    """Calibrating on one flat image collapses every activation range: the guard must catch that."""
    grey = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(grey, format="JPEG")
    data = {"images_zip": pipeline / "data/clean/images.zip", "split_csv": pipeline / "data/split.csv"}
    cfg = load_params(pipeline / "params.yaml").quantize
    served, report_path = tmp_path / "model.onnx", tmp_path / "quantize.json"
    fp32, validation = pipeline / "models/model_fp32.onnx", split_images("val", **data)
    report = quantize.run(cfg, fp32, served, report_path, [grey.getvalue()] * 4, validation)
    assert report["served"] == "fp32" and report["guard"]["passed"] is False
    assert report["guard"]["disagreements"] > report["guard"]["allowed_disagreements"]
    assert report["refusal"].startswith("int8 changes the class of")
    assert served.read_bytes() == fp32.read_bytes()
    assert json.loads(report_path.read_text()) == report


def test_refused_quantize_guard_serves_fp32_exits_zero_and_warns_in_one_line(pipeline: Path, tmp_path: Path) -> None:
    """A refusal is a verdict, not a failure: the pipeline goes on with the fp32 file and says so."""
    _copy_from(pipeline, tmp_path, "params.yaml", "models/model_fp32.onnx", "data/clean/images.zip", "data/split.csv")
    # Bars no int8 file can meet: more than 100% agreement, not even the photo floor tolerated.
    set_params(tmp_path / "params.yaml", {"quantize": {"min_agreement": 1.01, "tolerated_photos": -1}})
    result = _run_stage("quantize", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    warning = [line for line in result.stderr.splitlines() if "quantize guard refused int8" in line]
    assert len(warning) == 1 and warning[0].startswith("WARNING export.quantize: "), result.stderr
    assert "release.formats" in warning[0] and "quantize.enabled: false" in warning[0]
    served = (tmp_path / "models/model.onnx").read_bytes()
    assert served == (tmp_path / "models/model_fp32.onnx").read_bytes()
    report = json.loads((tmp_path / "reports/quantize.json").read_text())
    assert report["served"] == "fp32" and report["guard"]["passed"] is False
    assert report["refusal"] in warning[0]
