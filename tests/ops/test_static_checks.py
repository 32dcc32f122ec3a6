"""Linters and schema/offline validators over every ops file, plus the promises
the issue makes about each file's content (non-root, read-only, probes...)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.commands import require_tool
from tests.helpers.paths import REPO, load_yaml
from tests.helpers.prometheus import alert_rules

K8S = ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"]


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=kwargs.pop("cwd", REPO), capture_output=True, text=True, timeout=300, **kwargs)


def assert_ok(proc: subprocess.CompletedProcess, what: str) -> None:
    assert proc.returncode == 0, f"{what} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"


# ------------------------------------------------------------------ linters & schemas
@pytest.mark.parametrize("dockerfile", ["Dockerfile.serve", "Dockerfile.train"])
def test_hadolint(dockerfile: str) -> None:
    hadolint = require_tool("hadolint")
    assert_ok(run([hadolint, "--failure-threshold", "info", dockerfile]), f"hadolint {dockerfile}")


def test_compose_matches_compose_spec() -> None:
    tool = require_tool("check-jsonschema")
    assert_ok(run([tool, "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"]), "compose schema")


def test_workflows_match_github_schema() -> None:
    tool = require_tool("check-jsonschema")
    workflows = sorted(str(p.relative_to(REPO)) for p in (REPO / ".github" / "workflows").glob("*.y*ml"))
    assert workflows, "no workflow files under .github/workflows"
    assert_ok(run([tool, "--builtin-schema", "vendor.github-workflows", *workflows]), "workflow schema")


def test_kubernetes_manifests_validate_offline() -> None:
    tool = require_tool("kubernetes-validate")
    proc = run([tool, "--strict", *(f"deploy/k8s/{name}" for name in K8S)])
    assert_ok(proc, "kubernetes-validate")
    assert proc.stdout.count("passed") + proc.stderr.count("passed") == len(K8S), proc.stdout + proc.stderr


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml(REPO / "deploy" / "k8s" / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(K8S)


def test_promtool_check_config() -> None:
    assert_ok(run([require_tool("promtool"), "check", "config", "monitoring/prometheus.yml"]), "promtool check config")


def test_promtool_check_rules() -> None:
    assert_ok(run([require_tool("promtool"), "check", "rules", "monitoring/alerts.yml"]), "promtool check rules")


def test_promtool_alert_unit_tests_pass() -> None:
    proc = run([require_tool("promtool"), "test", "rules", "alerts.test.yml"], cwd=REPO / "monitoring")
    assert_ok(proc, "promtool test rules")
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_promtool_unit_tests_catch_a_broken_api_down_rule(tmp_path: Path) -> None:
    """Without absent() the rule would stay silent when the target vanishes: the tests must say so."""
    promtool = require_tool("promtool")
    rules = (REPO / "monitoring" / "alerts.yml").read_text()
    broken = re.sub(r"\n\s*or\n\s*absent\(up\{job=\"catsdogs-api\"\}\)", "", rules)
    assert broken != rules
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(REPO / "monitoring" / "alerts.test.yml", tmp_path / "alerts.test.yml")
    proc = run([promtool, "test", "rules", "alerts.test.yml"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "api down when the target vanishes" in proc.stdout + proc.stderr


# ------------------------------------------------------------------ alert rules
REQUIRED_ALERTS = {
    "CatsDogsApiDown",
    "CatsDogsHigh5xxRatio",
    "CatsDogsHighPredictLatencyP95",
    "CatsDogsHigh503Ratio",
    "CatsDogsClassMixSkewed",
    "CatsDogsMeanConfidenceLow",
}


def test_every_required_alert_exists_with_for_severity_and_annotations() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert REQUIRED_ALERTS <= set(rules), f"missing alerts: {REQUIRED_ALERTS - set(rules)}"
    docs = (REPO / "docs" / "operations.md").read_text().lower()
    for name, rule in rules.items():
        assert "for" in rule, f"{name} has no `for:`"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        for key in ("summary", "description", "runbook"):
            assert rule["annotations"].get(key), f"{name} lacks annotation {key}"
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor == name.lower(), f"{name}: runbook anchor should be #{name.lower()}"
        assert f"### {name.lower()}" in docs, f"{name}: no runbook section in docs/operations.md"
    assert 'absent(up{job="catsdogs-api"})' in rules["CatsDogsApiDown"]["expr"]


def test_every_alert_has_firing_and_silent_unit_tests() -> None:
    tests = load_yaml(REPO / "monitoring" / "alerts.test.yml")["tests"]
    firing, silent = set(), set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names <= firing, f"alerts never shown firing: {names - firing}"
    assert names <= silent, f"alerts never shown silent: {names - silent}"


def test_prometheus_scrapes_the_api_and_loads_the_rules() -> None:
    config = load_yaml(REPO / "monitoring" / "prometheus.yml")
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["catsdogs-api"]["static_configs"][0]["targets"] == ["api:8000"]


# ------------------------------------------------------------------ Dockerfiles
def test_serve_dockerfile_promises() -> None:
    text = (REPO / "Dockerfile.serve").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, flags=re.M | re.I)
    assert len(stages) >= 2, "Dockerfile.serve must be multi-stage"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, flags=re.M)
    assert "scripts/build_serve_venv.sh" in text and "COPY --from=builder /opt/venv /opt/venv" in text
    runtime = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER 10001", runtime, flags=re.M), "runtime stage must run as a non-root user"
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime and "HOST=0.0.0.0" in runtime
    assert "COPY models/model.onnx" in runtime
    healthcheck = re.search(r"^HEALTHCHECK.*?CMD (.+)$", runtime, flags=re.M | re.S).group(1)
    assert "python" in healthcheck and "curl" not in text and "wget" not in text
    assert "torch" not in runtime
    build = (REPO / "scripts" / "build_serve_venv.sh").read_text()
    assert "--require-hashes" in build and "requirements/serve.lock" in build and "--no-deps" in build


def test_train_dockerfile_promises() -> None:
    text = (REPO / "Dockerfile.train").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, flags=re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$", text, flags=re.M)
    # torch at train.txt's own pins, from that index, before the rest of train.txt.
    assert "grep -E '^(torch|torchvision)==' /tmp/requirements/train.txt > /tmp/requirements/torch.txt" in text
    assert 'pip install --index-url "${TORCH_INDEX_URL}" -r /tmp/requirements/torch.txt' in text
    assert "pip install -r /tmp/requirements/train.txt" in text
    assert re.search(r"^USER 10001", text, flags=re.M)
    assert 'ENTRYPOINT ["/app/scripts/docker-train.sh"]' in text
    assert "dvc repro" in (REPO / "scripts" / "docker-train.sh").read_text()


def test_serve_requirements_are_torch_free() -> None:
    for name in ("serve.txt", "serve.lock"):
        text = (REPO / "requirements" / name).read_text().lower()
        for banned in ("torch", "torchvision", "onnx=="):
            assert not re.search(rf"^{re.escape(banned)}", text, flags=re.M), f"{banned} in {name}"


def test_serve_lock_agrees_with_serve_txt() -> None:
    proc = run([sys.executable, "scripts/lock_serve.py", "--check"])
    assert_ok(proc, "serve.lock is out of date with serve.txt; run `python scripts/lock_serve.py`")
    lock = (REPO / "requirements" / "serve.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z])", lock.split("\n", 3)[3].strip())
    assert blocks and all(re.search(r"--hash=sha256:[0-9a-f]{64}", block) for block in blocks), "every pin needs a hash"


# ------------------------------------------------------------------ compose
def test_compose_services_are_configured_as_promised() -> None:
    compose = load_yaml(REPO / "docker-compose.yml")
    services = compose["services"]
    assert {"api", "prometheus", "grafana", "mlflow", "train"} <= set(services)

    api = services["api"]
    assert api["build"]["dockerfile"] == "Dockerfile.serve"
    assert api["read_only"] is True and any(t.startswith("/tmp") for t in api["tmpfs"])
    assert api["restart"] == "unless-stopped"
    assert api["deploy"]["resources"]["limits"]["memory"] and api["deploy"]["resources"]["limits"]["cpus"]
    assert api["healthcheck"]["test"][:2] == ["CMD", "python"]
    assert api["environment"]["HOST"] == "0.0.0.0"

    prom_mounts = services["prometheus"]["volumes"]
    assert "./monitoring/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prom_mounts
    assert "./monitoring/alerts.yml:/etc/prometheus/alerts.yml:ro" in prom_mounts

    grafana = services["grafana"]
    assert "./monitoring/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./monitoring/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (REPO / "monitoring/grafana/dashboards" / Path(home).name).is_file()

    mlflow = services["mlflow"]
    command = mlflow["command"]
    assert command[command.index("--backend-store-uri") + 1].startswith("sqlite:////mlflow/")
    assert command[command.index("--artifacts-destination") + 1] == "/mlflow/artifacts"
    assert "mlflow:5000" in command[command.index("--allowed-hosts") + 1].split(",")
    assert any(v.endswith(":/mlflow") for v in mlflow["volumes"])

    train = services["train"]
    assert train["profiles"] == ["train"]
    assert train["build"]["dockerfile"] == "Dockerfile.train"
    assert train["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert any(v.endswith(":/data:ro") for v in train["volumes"])


def test_compose_mlflow_server_matches_the_pinned_mlflow_client() -> None:
    image = load_yaml(REPO / "docker-compose.yml")["services"]["mlflow"]["image"]
    pin = re.search(r"^mlflow==(\S+)$", (REPO / "requirements" / "train.txt").read_text(), flags=re.M).group(1)
    assert image.endswith(f":v{pin}"), f"compose runs {image} but requirements/train.txt pins mlflow=={pin}"


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard_dir() -> None:
    ds = load_yaml(REPO / "monitoring/grafana/provisioning/datasources/prometheus.yml")["datasources"][0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090" and ds["uid"] == "prometheus"
    provider = load_yaml(REPO / "monitoring/grafana/provisioning/dashboards/catsdogs.yml")["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# ------------------------------------------------------------------ Kubernetes
def test_deployment_has_probes_resources_and_a_locked_down_security_context() -> None:
    deployment = load_yaml(REPO / "deploy/k8s/deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
    hpa = load_yaml(REPO / "deploy/k8s/hpa.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    service = load_yaml(REPO / "deploy/k8s/service.yaml")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


# ------------------------------------------------------------------ workflows
def test_ci_workflow_covers_tests_images_and_deploy() -> None:
    workflow = load_yaml(REPO / ".github/workflows/ci.yml")
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as True
    assert "pull_request" in triggers and "push" in triggers
    jobs = workflow["jobs"]
    steps = {
        name: "\n".join(str(step.get("run", "")) + str(step.get("with", "")) for step in job["steps"])
        for name, job in jobs.items()
    }
    assert "ruff check" in steps["lint"] and "ruff format --check" in steps["lint"]
    ci_run = [line for line in (REPO / ".ci/run").read_text().splitlines() if line.startswith("make ")]
    assert ci_run == ["make test"], ci_run  # exactly the README's second command
    make_test = re.search(r"^test:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), flags=re.M)
    assert make_test and "$(MAKE) test-containers" in make_test.group(1), "make test must end with the Docker checks"
    for target in ci_run:  # GitHub runs what .ci/run runs
        assert re.search(rf"^{target}( |$)", steps["test"], flags=re.M), f"the test job does not run `{target}`"
    for gated in ("images", "deploy"):
        assert "refs/heads/main" in jobs[gated]["if"], f"{gated} must only run on main"
    assert "${{ github.sha }}" in steps["images"] and ":latest" in steps["images"]
    assert "secrets.REGISTRY_USERNAME" in steps["images"] and "secrets.REGISTRY_PASSWORD" in steps["images"]
    assert jobs["deploy"]["needs"] == "images"
    assert "docker pull" in steps["deploy"] and "deploy/smoke_test.py" in steps["deploy"]
    assert "/ready" in steps["deploy"]
