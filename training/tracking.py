"""MLflow tracking that can never stall or fail the pipeline.

Default store: a local SQLite file (`mlflow.db`), no server needed. A remote
MLFLOW_TRACKING_URI is probed first; if it does not answer within a few
seconds, or breaks mid-run, the stage warns and carries on (falling back to the
local store when the probe fails).

One model, one run: train opens it and records its id in reports/train.json;
export, quantize and evaluate reopen it (`reopened_run`) to add their reports,
the ONNX file and its registry version. A stage that fails marks the run FAILED
(`failure_marks_run`). Under `dvc exp run` the run is named and tagged after the
DVC experiment (DVC_EXP_NAME), so `dvc exp show` and MLflow name the same thing, and
an experiment that did not retrain never writes into another model's run.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCAL_STORE = Path("mlflow.db")
LOCAL_ARTIFACTS = "mlartifacts"
PROBE_TIMEOUT_S = 3.0
TRAIN_REPORT = Path("reports/train.json")  # where train records its run id (`mlflow_run_id`)
# What `dvc exp run` sets in every stage's environment (dvc/env.py): the experiment's name, random
# (like `dotal-moot`) unless -n gave one, and the Git commit it starts from.
DVC_EXP_NAME, DVC_EXP_BASELINE_REV = "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"
FAILED_STAGE_TAG = "failed_stage"

log = logging.getLogger(__name__)


def server_answers(uri: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def project_root() -> Path:
    """The repository the user works in. DVC sets DVC_ROOT to it even for `dvc exp run --temp` and
    `--queue`, which run in a throwaway copy: runs stored there would be deleted with it."""
    return Path(os.environ.get("DVC_ROOT") or ".")


def local_tracking_uri() -> str:
    """Absolute, so the store is the one in the project of this run (see `mlflow ui`)."""
    return f"sqlite:///{(project_root() / LOCAL_STORE).resolve()}"


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

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._mlflow is None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking must never fail the pipeline
            log.warning("MLflow %s failed (%s); tracking disabled for the rest of this run", what, exc)
            self._mlflow = None
            return None

    def log_params(self, params: dict[str, Any]) -> None:
        """Params are write-once in MLflow: a reopened run keeps its first value and says so."""
        if self._mlflow is None:
            return
        run = self._call("get_run", self._mlflow.get_run, self.run_id)
        logged = run.data.params if run is not None else {}
        changed = sorted(key for key, value in params.items() if key in logged and logged[key] != str(value))
        if changed:
            log.warning(
                "MLflow run %s keeps its first %s (params are write-once); the stage's own report has the values used",
                self.run_id,
                ", ".join(f"{key}={logged[key]}" for key in changed),
            )
        fresh = {key: value for key, value in params.items() if key not in changed}
        if fresh and self._mlflow is not None:
            self._call("log_params", self._mlflow.log_params, fresh)

    def drop_failed_stage(self, stage: str) -> None:
        """`stage` failed on this run before (`failure_marks_run`) and runs again: the tag would be stale."""
        run = self._call("get_run", self._mlflow.get_run, self.run_id) if self._mlflow is not None else None
        if run is not None and run.data.tags.get(FAILED_STAGE_TAG) == stage and self._mlflow is not None:
            self._call("delete_tag", self._mlflow.delete_tag, FAILED_STAGE_TAG)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self._mlflow is not None:
            self._call("log_metrics", self._mlflow.log_metrics, metrics, step=step)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self._mlflow is not None:
            self._call("set_tags", self._mlflow.set_tags, tags)

    def log_artifact(self, path: str | Path) -> None:
        if self._mlflow is not None:
            self._call("log_artifact", self._mlflow.log_artifact, str(path))

    def log_torch_model(self, model: Any, input_example: Any, requirements: list[str]) -> None:
        if self._mlflow is not None:
            import mlflow.pytorch

            # torch.export specialises a batch dimension of 1 and warns ("Dim.AUTO ... specialized");
            # the same image twice keeps the logged model's batch dynamic and the log quiet.
            if len(input_example) == 1:
                input_example = input_example.repeat(2, axis=0)
            self._call(
                "log_model",
                mlflow.pytorch.log_model,
                model,
                name="model",
                input_example=input_example,
                pip_requirements=requirements,
            )

    def log_onnx_model(self, path: Path, requirements: list[str]) -> str | None:
        """Log the ONNX file as one self-contained model with its tensor signature; returns its model URI."""
        if self._mlflow is None:
            return None
        import mlflow.onnx
        import onnx

        proto = onnx.load(path)
        info = self._call(
            "log_model",
            mlflow.onnx.log_model,
            proto,
            name="onnx_model",
            signature=onnx_signature(proto),
            pip_requirements=requirements,
            save_as_external_data=False,  # one file, byte for byte the graph the service loads
        )
        return info.model_uri if info is not None else None

    def register(self, model_uri: str, name: str) -> str | None:
        """A new version of registered model `name`; returns the version number."""
        if self._mlflow is None:
            return None
        version = self._call("register_model", self._mlflow.register_model, model_uri, name)
        return str(version.version) if version is not None else None

    def tag_version(self, name: str, version: str, tags: dict[str, str]) -> None:
        client = self._client()
        for key, value in tags.items():
            if client is not None:
                self._call("set_model_version_tag", client.set_model_version_tag, name, version, key, value)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        client = self._client()
        if client is not None:
            self._call("set_registered_model_alias", client.set_registered_model_alias, name, alias, version)

    def _client(self) -> Any | None:
        return self._call("MlflowClient", self._mlflow.MlflowClient) if self._mlflow is not None else None


def onnx_signature(proto: Any) -> Any:
    """The graph's own inputs and outputs as an MLflow tensor signature (-1 for a dynamic axis)."""
    import onnx
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    def schema(values: Any) -> Schema:
        specs = []
        for value in values:
            tensor = value.type.tensor_type
            shape = tuple(dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor.shape.dim)
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
            specs.append(TensorSpec(dtype, shape, value.name))
        return Schema(specs)

    return ModelSignature(inputs=schema(proto.graph.input), outputs=schema(proto.graph.output))


def _connect() -> Any:
    # Fail fast instead of MLflow's default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    import mlflow

    uri = resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI"))
    mlflow.set_tracking_uri(uri)
    return mlflow


@contextmanager
def _active(mlflow: Any) -> Iterator[Tracker]:
    """Yield a tracker on the started run and end it, FAILED if the stage raised or exited non-zero."""
    tracker = Tracker(mlflow)
    status = "FINISHED"
    try:
        yield tracker
    except BaseException as exc:
        failed = not isinstance(exc, SystemExit) or exc.code not in (0, None)
        status = "FAILED" if failed else status
        raise
    finally:
        try:
            mlflow.end_run(status=status)
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow end_run failed (%s)", exc)


def unique_run_name(base: str) -> str:
    """The DVC experiment's name under `dvc exp run`, else `base`, and the UTC start time: a failed run
    and its rerun never share a name."""
    return f"{os.environ.get(DVC_EXP_NAME) or base}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def dvc_tags() -> dict[str, str]:
    """`dvc_experiment` and `dvc_baseline_rev` where `dvc exp run` set them: search runs with
    `tags.dvc_experiment = '<name from dvc exp show>'`."""
    tags = {"dvc_experiment": os.environ.get(DVC_EXP_NAME), "dvc_baseline_rev": os.environ.get(DVC_EXP_BASELINE_REV)}
    return {key: value for key, value in tags.items() if value}


@contextmanager
def tracked_run(experiment: str, run_name: str) -> Iterator[Tracker]:
    """A new run in `experiment`, named `unique_run_name(run_name)` and tagged with `dvc_tags()`."""
    try:
        mlflow = _connect()
        if mlflow.get_tracking_uri() == local_tracking_uri() and mlflow.get_experiment_by_name(experiment) is None:
            artifacts = (project_root() / LOCAL_ARTIFACTS).resolve().as_uri()
            mlflow.create_experiment(experiment, artifact_location=artifacts)
        mlflow.set_experiment(experiment)
        mlflow.start_run(run_name=unique_run_name(run_name), tags=dvc_tags())
    except Exception as exc:  # noqa: BLE001 - a broken store must not block training
        log.warning("MLflow unavailable (%s); training continues without tracking", exc)
        yield Tracker(None)
        return
    with _active(mlflow) as tracker:
        yield tracker


def train_run_id(report: Path = TRAIN_REPORT) -> str | None:
    """The MLflow run train opened for this model, or None when train ran untracked."""
    try:
        return json.loads(report.read_text()).get("mlflow_run_id")
    except (OSError, ValueError) as exc:
        log.warning("cannot read the MLflow run id from %s (%s)", report, exc)
        return None


def other_owner(mlflow: Any, run_id: str) -> str | None:
    """Under `dvc exp run`, who else a run belongs to: an experiment that changes only export or later
    params reuses its baseline's model and reports/train.json, and must not rewrite that run's story."""
    current = os.environ.get(DVC_EXP_NAME)
    if not current:
        return None
    owner = mlflow.get_run(run_id).data.tags.get("dvc_experiment")
    if owner == current:
        return None
    return f"experiment {owner}" if owner else "the workspace's pipeline"


@contextmanager
def reopened_run(run_id: str | None, stage: str) -> Iterator[Tracker]:
    """The model's training run, reopened so that `stage` logs into the same story."""
    if not run_id:
        log.warning("%s has no mlflow_run_id (train ran untracked); %s is not tracked", TRAIN_REPORT, stage)
        yield Tracker(None)
        return
    try:
        mlflow = _connect()
        owner = other_owner(mlflow, run_id)
        if owner is None:
            mlflow.start_run(run_id=run_id)
    except Exception as exc:  # noqa: BLE001 - a broken store must not fail the stage
        log.warning(
            "MLflow run %s from %s cannot be reopened (%s); %s is not tracked. "
            "Use the MLFLOW_TRACKING_URI that train used, or rerun train.",
            run_id,
            TRAIN_REPORT,
            exc,
            stage,
        )
        yield Tracker(None)
        return
    if owner is not None:
        log.warning(
            "train did not run in DVC experiment %s: its model's MLflow run %s belongs to %s, so %s logs "
            "nothing there (the experiment's own reports hold its figures)",
            os.environ.get(DVC_EXP_NAME),
            run_id,
            owner,
            stage,
        )
        yield Tracker(None)
        return
    with _active(mlflow) as tracker:
        tracker.drop_failed_stage(stage)
        yield tracker


@contextmanager
def failure_marks_run(stage: str, report: Path = TRAIN_REPORT) -> Iterator[None]:
    """Run a stage that follows train; if it raises or exits non-zero, mark the model's run FAILED
    (KILLED on Ctrl-C) with a `failed_stage` tag, so MLflow never shows a model whose pipeline broke
    as finished. Train's own run is ended FAILED by `tracked_run`; a later success of the stage
    finishes the run again and drops the tag. Exit status 2 is argparse's usage error: the stage
    never started, so the model has nothing to answer for."""
    try:
        yield
    except BaseException as exc:
        if not (isinstance(exc, SystemExit) and exc.code in (0, None, 2)):
            _mark(report, stage, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise


def _mark(report: Path, stage: str, status: str) -> None:
    """Quietly, beside the stage's own one-line error: no run recorded means nothing to mark."""
    try:
        run_id = json.loads(report.read_text()).get("mlflow_run_id")
    except (OSError, ValueError):
        return
    if not run_id:
        return
    try:
        mlflow = _connect()
        if other_owner(mlflow, run_id) is not None:
            return  # another experiment's model: this one failing says nothing about it
        client = mlflow.MlflowClient()
        client.set_tag(run_id, FAILED_STAGE_TAG, stage)
        client.set_terminated(run_id, status=status)
        log.debug("MLflow run %s marked %s: %s failed", run_id, status, stage)
    except Exception as exc:  # noqa: BLE001 - the stage's own error is what the user must see
        log.warning("MLflow run %s could not be marked %s (%s)", run_id, status, exc)
