"""`dvc repro` end to end on the mini archive, in a throwaway copy of the repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
import yaml

from service.metadata import ModelMetadata
from tests.shared_data import MINI_ZIP

REPO = Path(__file__).resolve().parents[2]
TINY_PARAMS = {
    "data": {"source": str(MINI_ZIP)},
    "preprocess": {"image_size": 32},
    "model": {"width": 8},
    "train": {"epochs": 2, "batch_size": 64, "threads": 2, "crop_size": 28},
    "export": {"parity_images": 64},
}


def _run(args: list[str], cwd: Path) -> str:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def _set_params(path: Path, overrides: dict) -> None:
    params = yaml.safe_load(path.read_text())
    for section, values in overrides.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert MINI_ZIP.exists(), f"{MINI_ZIP} is missing: the integration test reads the shared mini archive in place"
    work = tmp_path_factory.mktemp("repo")
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, work / name)
    for generated in ("dvc.lock", "models/model.onnx", "models/metrics.json"):
        (work / generated).unlink(missing_ok=True)
    _set_params(work / "params.yaml", TINY_PARAMS)
    _run(["git", "init", "-q"], work)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], work)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"], work)
    _run([sys.executable, "-m", "dvc", "repro"], work)
    return work


def test_repro_writes_every_output(pipeline: Path) -> None:
    for output in (
        "data/clean/images.zip",
        "data/clean/manifest.csv",
        "data/split.csv",
        "data/prepared/train_images.npy",
        "models/best_model.pth",
        "models/model.onnx",
        "models/metrics.json",
        "reports/data.json",
        "reports/train.json",
        "reports/train_history.csv",
        "reports/parity.json",
        "reports/eval/roc.csv",
        "reports/eval/predictions.csv",
        "dvc.lock",
    ):
        assert (pipeline / output).exists(), output
    data = json.loads((pipeline / "reports/data.json").read_text())
    assert data["kept"]["cat"] + data["kept"]["dog"] == data["kept"]["total"] > 900


def test_best_model_loads_weights_only(pipeline: Path) -> None:
    checkpoint = torch.load(pipeline / "models/best_model.pth", weights_only=True)
    assert checkpoint["classes"] == ["cat", "dog"]
    assert 0.0 <= checkpoint["val_accuracy"] <= 1.0


def test_parity_gate_passed_on_real_validation_images(pipeline: Path) -> None:
    parity = json.loads((pipeline / "reports/parity.json").read_text())
    assert parity["passed"] is True
    assert parity["images"] >= 64
    assert parity["class_mismatches"] == 0
    assert parity["max_abs_diff"] <= 1e-4


def test_onnx_carries_the_serving_contract(pipeline: Path) -> None:
    proto = onnx.load(str(pipeline / "models/model.onnx"))
    metadata = ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    assert metadata.classes == ("cat", "dog")
    assert metadata.preprocessing.image_size == 32
    assert metadata.data_version == json.loads((pipeline / "reports/data.json").read_text())["data_version"]
    assert proto.opset_import[0].version >= 17
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param, "batch axis must be dynamic"


def test_metrics_schema(pipeline: Path) -> None:
    metrics = json.loads((pipeline / "models/metrics.json").read_text())
    for key in ("accuracy", "roc_auc", "log_loss", "macro_f1", "model_version", "data_version"):
        assert key in metrics, key
    assert set(metrics["per_class"]) == {"cat", "dog"}
    for values in metrics["per_class"].values():
        assert set(values) >= {"accuracy", "precision", "recall", "f1", "support"}
    assert sum(v["support"] for v in metrics["per_class"].values()) == metrics["images"] == 100
    assert 0.0 <= metrics["roc_auc"] <= 1.0


def test_dvc_metrics_and_plots_commands_work(pipeline: Path) -> None:
    shown = _run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], pipeline)
    assert "roc_auc" in shown and "best_val_accuracy" in shown
    _run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(pipeline / "plots_html")], pipeline)
    assert (pipeline / "plots_html" / "index.html").exists()


def test_repro_on_unchanged_workspace_does_nothing(pipeline: Path) -> None:
    out = _run([sys.executable, "-m", "dvc", "repro"], pipeline)
    assert "Running stage" not in out, out


def test_training_param_change_reruns_only_train_export_evaluate(pipeline: Path) -> None:
    _set_params(pipeline / "params.yaml", {"train": {"epochs": 1}})
    out = _run([sys.executable, "-m", "dvc", "repro"], pipeline)
    ran = {
        stage
        for stage in ("ingest", "split", "prepare", "train", "export", "evaluate")
        if f"Running stage '{stage}'" in out
    }
    assert ran == {"train", "export", "evaluate"}, out


def test_dvc_exp_run_with_set_param(pipeline: Path) -> None:
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], pipeline)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "after repro"], pipeline)
    out = _run([sys.executable, "-m", "dvc", "exp", "run", "-S", "train.epochs=2"], pipeline)
    assert "Ran experiment" in out, out
