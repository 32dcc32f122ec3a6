"""deploy/k8s/training, offline: the core objects against Kubernetes' schemas, and the PyTorchJob,
whose schema is the training operator's CRD, by its pod templates (validated as Kubernetes pods)
and by the fields of Kubeflow's kubeflow.org/v1 PyTorchJob spec."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.helpers.commands import require_tool
from tests.helpers.paths import REPO, load_yaml
from tests.helpers.pipeline import stage_args

TRAINING = REPO / "deploy" / "k8s" / "training"
CORE = ["pvc.yaml", "prepare-job.yaml"]
# The kubeflow.org/v1 PyTorchJob fields (training operator v1.7+); anything else the API server drops or rejects.
SPEC_FIELDS = {"elasticPolicy", "nprocPerNode", "pytorchReplicaSpecs", "runPolicy"}
REPLICA_FIELDS = {"replicas", "restartPolicy", "template"}
RUN_POLICY_FIELDS = {
    "activeDeadlineSeconds",
    "backoffLimit",
    "cleanPodPolicy",
    "managedBy",
    "schedulingPolicy",
    "suspend",
    "ttlSecondsAfterFinished",
}


def _validate(paths: list[Path]) -> None:
    proc = subprocess.run(
        [require_tool("kubernetes-validate"), "--strict", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"kubernetes-validate failed:\n{output}"
    assert output.count("passed") == len(paths), output


def _job() -> dict:
    return load_yaml(TRAINING / "pytorchjob.yaml")


def test_volume_and_prepare_job_validate_offline() -> None:
    _validate([TRAINING / name for name in CORE])


def test_pytorchjob_pod_templates_validate_as_kubernetes_pods(tmp_path: Path) -> None:
    paths = []
    for role, replica in _job()["spec"]["pytorchReplicaSpecs"].items():
        path = tmp_path / f"{role}.yaml"
        template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": role.lower()}}
        path.write_text(yaml.safe_dump(template | {"template": replica["template"]}))
        paths.append(path)
    _validate(paths)


def test_pytorchjob_uses_only_the_kubeflow_v1_spec_fields() -> None:
    job = _job()
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    spec = job["spec"]
    assert set(spec) <= SPEC_FIELDS, set(spec) - SPEC_FIELDS
    assert set(spec["runPolicy"]) <= RUN_POLICY_FIELDS, set(spec["runPolicy"]) - RUN_POLICY_FIELDS
    assert spec["runPolicy"]["cleanPodPolicy"] in {"None", "Running", "All"}
    assert isinstance(spec["nprocPerNode"], str), "nprocPerNode is a string in the CRD: quote the number"
    replicas = spec["pytorchReplicaSpecs"]
    assert set(replicas) <= {"Master", "Worker"} and replicas["Master"]["replicas"] == 1
    for replica in replicas.values():
        assert set(replica) <= REPLICA_FIELDS, set(replica) - REPLICA_FIELDS
        assert replica["restartPolicy"] in {"Always", "OnFailure", "Never", "ExitCode"}


def test_every_pod_runs_torchrun_on_the_train_module_with_the_operators_rendezvous() -> None:
    for replica in _job()["spec"]["pytorchReplicaSpecs"].values():
        (container,) = replica["template"]["spec"]["containers"]
        assert container["name"] == "pytorch", "the operator injects its env into the container named pytorch"
        # No --nnodes/--node-rank/--master-addr: torchrun reads them from the operator's PET_* variables.
        assert container["command"] == ["python", "-m", "torch.distributed.run", "-m", "training.train"]
        assert container["args"] == stage_args("train"), "the train stage's paths, as dvc.yaml passes them"


def test_every_rank_shares_the_prepared_data_and_the_checkpoint_folder() -> None:
    claim = load_yaml(TRAINING / "pvc.yaml")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "pods on different nodes mount it together"
    for replica in _job()["spec"]["pytorchReplicaSpecs"].values():
        pod = replica["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        mounts = {m["mountPath"]: m.get("subPath") for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["/app/data"] == "data" and mounts["/app/reports"] == "reports"
        assert mounts["/app/models"] == "models", "resume reads models/checkpoint.pth on every rank"
    prepare = load_yaml(TRAINING / "prepare-job.yaml")["spec"]["template"]["spec"]
    prepared = {m["mountPath"]: m.get("subPath") for m in prepare["containers"][0]["volumeMounts"]}
    assert prepared["/app/data"] == "data" and prepared["/app/reports"] == "reports"


def test_training_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml(TRAINING / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted([*CORE, "pytorchjob.yaml"])
