"""MLflow tracking never stalls or fails training."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.helpers.network import free_port
from training.tracking import Tracker, local_tracking_uri, resolve_tracking_uri, tracked_run


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
