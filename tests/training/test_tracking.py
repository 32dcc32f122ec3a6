"""MLflow tracking never stalls or fails training, and tells the truth: failed stages, DVC experiment names."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.helpers.network import free_port
from tests.helpers.paths import REPO
from tests.helpers.pipeline import stage_command
from training import tracking
from training.tracking import (
    DVC_EXP_BASELINE_REV,
    DVC_EXP_NAME,
    Tracker,
    failure_marks_run,
    local_tracking_uri,
    reopened_run,
    resolve_tracking_uri,
    tracked_run,
)


def _silent_server() -> socket.socket:
    """Accepts connections and never answers: the worst case for a client."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server


def test_no_uri_means_local_sqlite_store_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_experiments_in_a_temporary_copy_log_to_the_projects_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, temp_copy = tmp_path / "project", tmp_path / "project" / ".dvc" / "tmp" / "exps" / "run"
    temp_copy.mkdir(parents=True)
    monkeypatch.chdir(temp_copy)
    monkeypatch.setenv("DVC_ROOT", str(project))  # what `dvc exp run --temp` sets
    assert resolve_tracking_uri(None) == f"sqlite:///{project / 'mlflow.db'}"


def test_refused_server_falls_back_to_local_store_quickly() -> None:
    started = time.perf_counter()
    assert resolve_tracking_uri(f"http://127.0.0.1:{free_port()}") == local_tracking_uri()
    assert time.perf_counter() - started < 5


def test_silent_server_falls_back_within_the_probe_timeout() -> None:
    server = _silent_server()
    try:
        started = time.perf_counter()
        uri = resolve_tracking_uri(f"http://127.0.0.1:{server.getsockname()[1]}")
        assert uri == local_tracking_uri()
        assert time.perf_counter() - started < 5
    finally:
        server.close()


def test_non_http_uri_is_used_as_given() -> None:
    assert resolve_tracking_uri("sqlite:///elsewhere.db") == "sqlite:///elsewhere.db"


def test_tracker_disables_itself_after_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        calls = 0

        def log_metrics(self, *args, **kwargs):
            Broken.calls += 1
            raise ConnectionError("server went away")

    tracker = Tracker(Broken())
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.log_metrics({"loss": 0.5}, step=2)
    assert Broken.calls == 1
    assert "tracking disabled" in caplog.text


@pytest.mark.slow
def test_unreachable_server_run_logs_locally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    started = time.perf_counter()
    with tracked_run("test-experiment", "run") as tracker:
        tracker.log_params({"lr": 0.1})
        tracker.log_metrics({"val_accuracy": 0.5}, step=1)
        run_id = tracker.run_id
    assert run_id, "the run must land in the local store"
    assert (tmp_path / "mlflow.db").exists()
    assert time.perf_counter() - started < 60

    import mlflow

    mlflow.set_tracking_uri(local_tracking_uri())
    run = mlflow.get_run(run_id)
    assert run.data.params["lr"] == "0.1"
    assert run.data.metrics["val_accuracy"] == 0.5


@pytest.mark.slow
def test_logging_the_torch_model_from_a_one_image_example_prints_no_export_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    from training.model import build_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    model = build_model(2, 4, 0.1, arch="cnn", pretrained=False, frozen_blocks=0).eval()
    with tracked_run("quiet", run_name="quiet") as tracker:
        tracker.log_torch_model(model, np.zeros((1, 3, 32, 32), dtype=np.float32), ["torch"])
        assert tracker.run_id is not None
    # torch logs this through its own handler on stderr, not through `warnings`.
    assert "specialized" not in capfd.readouterr().err


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One local SQLite store for the run-story tests below (creating one costs seconds); each test has its runs."""
    return tmp_path_factory.mktemp("store")


@pytest.fixture
def store(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """Stages run in `store_dir`, outside any DVC experiment, logging to its local store."""
    monkeypatch.chdir(store_dir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for variable in (DVC_EXP_NAME, DVC_EXP_BASELINE_REV, "DVC_ROOT"):
        monkeypatch.delenv(variable, raising=False)
    return MlflowClient(local_tracking_uri())


def _trained(report: Path) -> str:
    """What train does: a finished run whose id `report` (reports/train.json) records."""
    with tracked_run("story", "train-abc123") as tracker:
        run_id = tracker.run_id
    assert run_id
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"mlflow_run_id": run_id}))
    return run_id


def test_a_run_under_dvc_exp_run_is_named_and_tagged_after_the_experiment(
    store: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DVC_EXP_NAME, "dotal-moot")  # what `dvc exp run` sets (dvc/env.py)
    monkeypatch.setenv(DVC_EXP_BASELINE_REV, "9682628" + "0" * 33)
    run = store.get_run(_trained(tmp_path / "reports/train.json"))
    assert re.fullmatch(r"dotal-moot-\d{8}-\d{6}", run.info.run_name), run.info.run_name
    assert run.data.tags["dvc_experiment"] == "dotal-moot"
    assert run.data.tags["dvc_baseline_rev"].startswith("9682628")


def test_a_rerun_never_shares_its_name_and_a_workspace_run_has_no_experiment_tag(
    store: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter([time.gmtime(1_800_000_000), time.gmtime(1_800_000_042)])
    monkeypatch.setattr(tracking.time, "gmtime", lambda: next(clock))
    first, second = (store.get_run(_trained(tmp_path / "reports/train.json")) for _ in range(2))
    names = (first.info.run_name, second.info.run_name)
    assert names == ("train-abc123-20270115-080000", "train-abc123-20270115-080042")
    assert "dvc_experiment" not in first.data.tags


def test_a_stage_that_exits_non_zero_marks_the_models_run_failed_until_it_succeeds(
    store: MlflowClient, tmp_path: Path
) -> None:
    report = tmp_path / "reports/train.json"
    run_id = _trained(report)
    assert store.get_run(run_id).info.status == "FINISHED"
    with pytest.raises(SystemExit), failure_marks_run("export", report):
        sys.exit(1)
    run = store.get_run(run_id)
    assert (run.info.status, run.data.tags["failed_stage"]) == ("FAILED", "export")
    with reopened_run(run_id, "export"):  # the stage, fixed and run again
        pass
    run = store.get_run(run_id)
    assert run.info.status == "FINISHED" and "failed_stage" not in run.data.tags


@pytest.mark.parametrize(("error", "status"), [(ValueError("bad input"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_a_stage_that_raises_marks_the_run(
    store: MlflowClient, tmp_path: Path, error: BaseException, status: str
) -> None:
    report = tmp_path / "reports/train.json"
    run_id = _trained(report)
    with pytest.raises(type(error)), failure_marks_run("evaluate", report):
        raise error
    assert store.get_run(run_id).info.status == status


@pytest.mark.parametrize("code", [0, 2])  # 2: argparse's usage error, before the stage does anything
def test_a_stage_that_exits_zero_or_on_a_usage_error_leaves_the_run_finished(
    store: MlflowClient, tmp_path: Path, code: int
) -> None:
    report = tmp_path / "reports/train.json"
    run_id = _trained(report)
    with pytest.raises(SystemExit), failure_marks_run("quantize", report):
        sys.exit(code)
    assert store.get_run(run_id).info.status == "FINISHED"


def test_a_stage_failing_without_a_recorded_run_adds_nothing_to_its_error(
    store: MlflowClient, tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(SystemExit), failure_marks_run("export", tmp_path / "reports/train.json"):
        sys.exit("error: no checkpoint at models/best_model.pth; run `dvc repro train`")
    assert caplog.text == "" and capfd.readouterr().err == ""


def test_train_that_raises_ends_its_own_run_failed(store: MlflowClient) -> None:
    with pytest.raises(RuntimeError), tracked_run("story", "train-abc123") as tracker:
        run_id = tracker.run_id
        raise RuntimeError("out of memory")
    assert store.get_run(run_id).info.status == "FAILED"


@pytest.mark.slow
def test_the_evaluate_stage_failing_as_a_process_marks_the_run_failed(
    store: MlflowClient, store_dir: Path, tmp_path: Path
) -> None:
    """The evaluate stage's command as dvc.yaml runs it, with no model to score: the `__main__` wiring."""
    run_id = _trained(tmp_path / "reports/train.json")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"PYTHONPATH": str(REPO), "DVC_ROOT": str(store_dir)}  # as under dvc: the project's store
    result = subprocess.run(
        stage_command("evaluate"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1 and "error:" in result.stderr, result.stderr[-2000:]  # the stage's one-line error
    run = store.get_run(run_id)
    assert (run.info.status, run.data.tags["failed_stage"]) == ("FAILED", "evaluate"), result.stderr[-2000:]


def test_an_experiment_that_did_not_retrain_leaves_its_baselines_run_alone(
    store: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`dvc exp run -S quantize.calibration_images=512` reruns quantize and evaluate on the baseline's model."""
    report = tmp_path / "reports/train.json"
    baseline = _trained(report)  # the workspace's model, trained by a plain `dvc repro`
    monkeypatch.setenv(DVC_EXP_NAME, "calib-512")
    with reopened_run(baseline, "evaluate") as tracker:
        tracker.log_metrics({"test_accuracy": 0.5})
        assert tracker.run_id is None
    with pytest.raises(SystemExit), failure_marks_run("evaluate", report):
        sys.exit(1)
    run = store.get_run(baseline)
    assert run.info.status == "FINISHED" and "test_accuracy" not in run.data.metrics
    assert "failed_stage" not in run.data.tags
    assert "train did not run in DVC experiment calib-512" in caplog.text
    assert "belongs to the workspace's pipeline" in caplog.text


def test_a_stage_in_the_experiment_that_trained_the_model_logs_into_its_run(
    store: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DVC_EXP_NAME, "mini")
    run_id = _trained(tmp_path / "reports/train.json")
    with reopened_run(run_id, "evaluate") as tracker:
        tracker.log_metrics({"test_accuracy": 0.88})
    assert store.get_run(run_id).data.metrics["test_accuracy"] == 0.88
