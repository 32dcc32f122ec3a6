"""One model, one MLflow run: export, quantize and evaluate reopen train's run; every export is registered.

Each stage's `track` runs against a temporary SQLite store, as `dvc repro` calls it after the stage's
own work, with the stage reports written where the stages write them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import onnx
import pytest
from mlflow import MlflowClient

from export import export, quantize
from service.metadata import ModelMetadata
from tests.helpers.network import free_port
from tests.helpers.paths import REPO
from tests.helpers.pipeline import stage_args
from tests.helpers.predictions import answers
from training import evaluate
from training.metrics import classification_report
from training.params import Params, load_params
from training.tracking import tracked_run

pytestmark = pytest.mark.slow

BUNDLED = REPO / "models" / "model.onnx"
PARAMS = load_params(REPO / "params.yaml")
NAME, ALIAS = PARAMS.mlflow.registered_model, PARAMS.mlflow.champion_alias
EVAL = evaluate.arguments().parse_args(stage_args("evaluate"))  # where dvc.yaml has evaluate write
EVAL_OUTPUTS = evaluate.EvalOutputs(
    EVAL.metrics, EVAL.report, EVAL.predictions, EVAL.roc, EVAL.misclassified, EVAL.reliability
)


def _write(path: str | Path, value: object) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value) if not isinstance(value, str) else value)
    return path


def _train() -> str | None:
    """What train does: open the run, log into it, record its id in reports/train.json."""
    with tracked_run(PARAMS.mlflow.experiment, "train-test") as tracker:
        tracker.log_params({"train.lr": 0.003})
        tracker.log_metrics({"val_accuracy": 0.9}, step=1)
        run_id = tracker.run_id
    _write("reports/train.json", {"best_val_accuracy": 0.9, "mlflow_run_id": run_id})
    return run_id


def _export_and_quantize(params: Params) -> None:
    parity = {
        "passed": True,
        "images": 64,
        "class_mismatches": 0,
        "max_abs_diff": 8e-7,
        "bytes": 13_643_302,
        "temperature": 0.7,
    }
    export.track(parity, params.export, _write("reports/parity.json", parity))
    guard = {"agreement": 0.9965, "fp32_accuracy": 0.9855, "int8_accuracy": 0.985, "accuracy_drop": 0.0005}
    report = {"enabled": True, "guard": guard | {"passed": True}, "served": "int8"}
    quantize.track(report, params.quantize, _write("reports/quantize.json", report))


def _evaluate(params: Params, right_per_class: int) -> str | None:
    """evaluate's outputs for 100 test photos per class, `right_per_class` of each labelled right, each answer
    as confident as the model is accurate (calibrated: release.max_ece holds)."""
    labels, probabilities = answers(100, right_per_class)
    report = classification_report(labels, probabilities, ["cat", "dog"])
    report |= {"model_version": "fe0485afe8c3", "data_version": "test"}
    model = Path("models/model.onnx")
    model.parent.mkdir(exist_ok=True)
    shutil.copyfile(BUNDLED, model)
    figures = {"accuracy": report["accuracy"], "roc_auc": report["roc_auc"], "format": "int8"}
    for path, value in ((EVAL_OUTPUTS.metrics, figures), (EVAL_OUTPUTS.report, report)):
        _write(path, value)
    _write(EVAL_OUTPUTS.roc, "fpr,tpr,threshold\n0,0,1\n1,1,0\n")
    _write(EVAL_OUTPUTS.misclassified, [])
    _write(EVAL_OUTPUTS.reliability, "confidence,accuracy,images,lower,upper\n0.9,0.9,200,0.8667,0.9333\n")
    return evaluate.track(report, figures, model, params, EVAL_OUTPUTS)


@dataclass(frozen=True)
class Story:
    run_id: str
    passing_version: str
    failing_version: str


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    """A model that clears the release bar, then a retrain of it that does not."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("store"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        run_id = _train()
        _export_and_quantize(PARAMS)
        passing = _evaluate(PARAMS, right_per_class=99)
        failing = _evaluate(PARAMS, right_per_class=90)
        assert run_id and passing and failing
        yield Story(run_id, passing, failing)


def test_one_run_holds_params_curves_parity_quantize_and_test_metrics(story: Story) -> None:
    run = MlflowClient().get_run(story.run_id)
    assert {"train.lr", "export.opset", "export.parity_atol", "quantize.min_agreement"} <= set(run.data.params)
    exported = {"val_accuracy", "parity_max_abs_diff", "parity_passed", "temperature"}
    assert exported | {"quantize_agreement", "quantize_passed"} <= set(run.data.metrics)
    assert {"test_accuracy", "test_roc_auc", "test_log_loss", "test_macro_f1"} <= set(run.data.metrics)
    assert run.data.tags["served_format"] == "int8"
    artifacts = {item.path for item in MlflowClient().list_artifacts(story.run_id)}
    assert {"parity.json", "quantize.json", "metrics.json", "report.json", "roc.csv"} <= artifacts


def test_the_onnx_file_is_in_the_run_with_its_input_and_output_signature(story: Story) -> None:
    info = mlflow.models.get_model_info(f"models:/{NAME}/{story.passing_version}")
    assert info.run_id == story.run_id
    assert "onnx" in info.flavors
    (image,), (probabilities,) = info.signature.inputs.inputs, info.signature.outputs.inputs
    size = ModelMetadata.from_props(
        {p.key: p.value for p in onnx.load(BUNDLED).metadata_props}
    ).preprocessing.image_size
    assert (image.name, image.type, image.shape) == ("image", np.dtype("float32"), (-1, 3, size, size))
    assert (probabilities.name, probabilities.shape) == ("probabilities", (-1, 2))


def test_every_evaluated_model_is_a_new_registered_version(story: Story) -> None:
    versions = MlflowClient().search_model_versions(f"name='{NAME}'")
    assert {str(v.version) for v in versions} == {story.passing_version, story.failing_version}
    assert int(story.failing_version) == int(story.passing_version) + 1


def test_champion_alias_moves_only_to_a_version_that_clears_the_release_bar(story: Story) -> None:
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(NAME, ALIAS).version) == story.passing_version
    assert client.get_model_version(NAME, story.passing_version).tags["release_bar"] == "passed"
    failed = client.get_model_version(NAME, story.failing_version).tags["release_bar"]
    assert f"accuracy 0.9000 < release.min_accuracy {PARAMS.release.min_accuracy}" in failed


def test_dead_tracking_server_never_fails_a_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Train logged to a server that is gone now: every later stage warns and finishes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    _write("reports/train.json", {"mlflow_run_id": "0" * 32})
    _export_and_quantize(PARAMS)
    assert _evaluate(PARAMS, right_per_class=99) is None
    assert "cannot be reopened" in caplog.text
