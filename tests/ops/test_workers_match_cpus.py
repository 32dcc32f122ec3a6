"""The deployment files start one worker process per CPU they grant: more would fight over the
quota, fewer would leave CPUs idle that the HPA believes are used."""

from __future__ import annotations

import re

from tests.helpers.paths import REPO, load_yaml


def cpus(quantity: str) -> float:
    """A Kubernetes CPU quantity ("2", "1500m") in CPUs."""
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_the_deployment_runs_one_worker_per_cpu_of_its_limit() -> None:
    container = load_yaml(REPO / "deploy/k8s/deployment.yaml")["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert int(env["WORKERS"]) == cpus(str(container["resources"]["limits"]["cpu"]))
    assert "ORT_INTRA_OP_THREADS" not in env and "INFERENCE_THREADS" not in env  # sized per worker by `auto`


def test_compose_runs_one_worker_per_cpu_of_its_limit() -> None:
    api = load_yaml(REPO / "docker-compose.yml")["services"]["api"]
    default = re.fullmatch(r"\$\{WORKERS:-(\d+)\}", api["environment"]["WORKERS"])
    assert default, api["environment"]["WORKERS"]
    assert int(default.group(1)) == cpus(api["deploy"]["resources"]["limits"]["cpus"])


def test_the_image_sizes_workers_from_the_container_quota() -> None:
    assert re.search(r"^\s+WORKERS=auto\s*$", (REPO / "Dockerfile.serve").read_text(), flags=re.M)
