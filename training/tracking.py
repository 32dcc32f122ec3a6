"""MLflow tracking that can never stall or fail the pipeline.

Default store: a local SQLite file (`mlflow.db`), no server needed. A remote
MLFLOW_TRACKING_URI is probed first; if it does not answer within a few
seconds, or breaks mid-run, training warns and carries on (falling back to the
local store when the probe fails).
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCAL_STORE = Path("mlflow.db")
LOCAL_ARTIFACTS = "mlartifacts"
PROBE_TIMEOUT_S = 3.0

log = logging.getLogger(__name__)


def server_answers(uri: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def local_tracking_uri() -> str:
    """Absolute, so the store is the one in the working directory of this run (see `mlflow ui`)."""
    return f"sqlite:///{LOCAL_STORE.resolve()}"


def resolve_tracking_uri(requested: str | None) -> str:
    if not requested:
        return local_tracking_uri()
    if requested.startswith(("http://", "https://")) and not server_answers(requested):
        log.warning(
            "MLflow server %s did not answer within %.0fs; logging to %s instead. "
            "Start the server or unset MLFLOW_TRACKING_URI.",
            requested,
            PROBE_TIMEOUT_S,
            local_tracking_uri(),
        )
        return local_tracking_uri()
    return requested


class Tracker:
    """Thin MLflow facade: after the first failure it warns once and goes quiet."""

    def __init__(self, mlflow_module: Any | None) -> None:
        self._mlflow = mlflow_module

    @property
    def run_id(self) -> str | None:
        if self._mlflow is None:
            return None
        run = self._mlflow.active_run()
        return run.info.run_id if run else None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        if self._mlflow is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking must never fail training
            log.warning("MLflow %s failed (%s); tracking disabled for the rest of this run", what, exc)
            self._mlflow = None

    def log_params(self, params: dict[str, Any]) -> None:
        if self._mlflow is not None:
            self._call("log_params", self._mlflow.log_params, params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self._mlflow is not None:
            self._call("log_metrics", self._mlflow.log_metrics, metrics, step=step)

    def log_artifact(self, path: str | Path) -> None:
        if self._mlflow is not None:
            self._call("log_artifact", self._mlflow.log_artifact, str(path))

    def log_torch_model(self, model: Any, input_example: Any, requirements: list[str]) -> None:
        if self._mlflow is not None:
            import mlflow.pytorch

            self._call(
                "log_model",
                mlflow.pytorch.log_model,
                model,
                name="model",
                input_example=input_example,
                pip_requirements=requirements,
            )


@contextmanager
def tracked_run(experiment: str, run_name: str) -> Iterator[Tracker]:
    # Fail fast instead of MLflow's default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    try:
        import mlflow

        uri = resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI"))
        mlflow.set_tracking_uri(uri)
        if uri == local_tracking_uri() and mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=Path(LOCAL_ARTIFACTS).resolve().as_uri())
        mlflow.set_experiment(experiment)
        mlflow.start_run(run_name=run_name)
    except Exception as exc:  # noqa: BLE001 - a broken store must not block training
        log.warning("MLflow unavailable (%s); training continues without tracking", exc)
        yield Tracker(None)
        return
    tracker = Tracker(mlflow)
    try:
        yield tracker
    finally:
        try:
            mlflow.end_run()
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow end_run failed (%s)", exc)
