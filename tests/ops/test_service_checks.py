"""smoke_test.py, post_deploy_monitor.py and healthcheck.py against the real
service (`python -m service` on 127.0.0.1 with a toy ONNX model)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.images import BLUISH, REDDISH, write_image
from tests.helpers.network import free_port
from tests.helpers.onnx_models import TOY_VERSION
from tests.helpers.paths import REPO
from tests.helpers.service_process import ServiceProcess

SMOKE = str(REPO / "deploy" / "smoke_test.py")
MONITOR = str(REPO / "deploy" / "post_deploy_monitor.py")
HEALTH = str(REPO / "deploy" / "healthcheck.py")


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    # -I: isolated mode, the CLIs must not need anything from this repo's environment.
    return subprocess.run([sys.executable, "-I", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("labelled")
    for i in range(4):
        write_image(root / "cat" / f"{i}.jpg", REDDISH)
        write_image(root / f"dog.{i}.png", BLUISH)
    (root / "notes.txt").write_text("not an image")
    return root


# ------------------------------------------------------------------ smoke_test
def test_smoke_test_passes_on_the_bundled_cat(service: ServiceProcess) -> None:
    proc = cli(SMOKE, "--url", service.url + "/")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "smoke test PASSED" in proc.stdout
    for check in ("health", "ready", "predict[1]", "predict[3]", "metrics"):
        assert f"PASS  {check}" in proc.stdout


def test_smoke_test_json_report(service: ServiceProcess) -> None:
    proc = cli(SMOKE, "--url", service.url, "--json", "--repeat", "2")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["passed"] is True and report["expect"] == "cat"
    predictions = [c for c in report["checks"] if c["check"].startswith("predict")]
    assert len(predictions) == 2
    assert all(c["predicted_class"] == "cat" and c["model_version"] == TOY_VERSION for c in predictions)


def test_smoke_test_fails_on_the_wrong_label(service: ServiceProcess) -> None:
    proc = cli(SMOKE, "--url", service.url, "--expect", "dog", "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["passed"] is False
    assert "predicted 'cat', expected 'dog'" in report["checks"][2]["detail"]


def test_smoke_test_fails_over_the_latency_bound(service: ServiceProcess) -> None:
    proc = cli(SMOKE, "--url", service.url, "--max-latency-ms", "0.001")
    assert proc.returncode == 1
    assert "ms > 0.001 ms" in proc.stdout and "smoke test FAILED" in proc.stdout


def test_smoke_test_fails_when_nothing_listens() -> None:
    proc = cli(SMOKE, "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "2")
    assert proc.returncode == 1
    assert "FAIL  health" in proc.stdout and "no answer" in proc.stdout


def test_smoke_test_derives_the_label_from_the_file_name(service: ServiceProcess, tmp_path: Path) -> None:
    image = write_image(tmp_path / "dog.7.jpg", BLUISH)
    assert cli(SMOKE, "--url", service.url, "--image", str(image)).returncode == 0
    image = write_image(tmp_path / "cat.jpg", BLUISH)
    assert cli(SMOKE, "--url", service.url, "--image", str(image)).returncode == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--url", "ftp://x"],
        ["--url", "http://x", "--image", "/nonexistent.jpg"],
        ["--url", "http://x", "--repeat", "0"],
        [],
    ],
)
def test_smoke_test_rejects_bad_arguments(args: list[str]) -> None:
    assert cli(SMOKE, *args).returncode == 2


# ------------------------------------------------------------------ post_deploy_monitor
def test_monitor_reports_accuracy_latency_and_passes(service: ServiceProcess, labelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = cli(
        MONITOR,
        "--url",
        service.url,
        "--images",
        str(labelled),
        "--min-accuracy",
        "1.0",
        "--min-class-accuracy",
        "1.0",
        "--max-p95-ms",
        "5000",
        "--concurrency",
        "2",
        "--output",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == report
    assert report["n"] == 8 and report["errors"] == 0 and report["accuracy"] == 1.0
    assert report["per_class"] == {
        "cat": {"n": 4, "correct": 4, "accuracy": 1.0},
        "dog": {"n": 4, "correct": 4, "accuracy": 1.0},
    }
    assert report["confusion"] == {"cat": {"cat": 4}, "dog": {"dog": 4}}
    latency = report["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert report["model_versions"] == [TOY_VERSION] and report["passed"] is True


def test_monitor_fails_under_the_accuracy_thresholds(service: ServiceProcess, labelled: Path, tmp_path: Path) -> None:
    write_image(labelled.parent / "mixed" / "dog" / "odd.jpg", REDDISH)  # a "dog" the toy model calls cat
    for i in range(3):
        write_image(labelled.parent / "mixed" / "dog" / f"{i}.jpg", BLUISH)
        write_image(labelled.parent / "mixed" / "cat" / f"{i}.jpg", REDDISH)
    proc = cli(
        MONITOR,
        "--url",
        service.url,
        "--images",
        str(labelled.parent / "mixed"),
        "--min-accuracy",
        "0.8",
        "--min-class-accuracy",
        "0.9",
    )
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["accuracy"] == pytest.approx(6 / 7)
    assert report["per_class"]["dog"]["accuracy"] == 0.75
    assert report["failures"] == ["accuracy on dog 0.750 < 0.9"]
    assert "FAIL: accuracy on dog" in proc.stderr


def test_monitor_fails_over_the_latency_bound(service: ServiceProcess, labelled: Path) -> None:
    proc = cli(MONITOR, "--url", service.url, "--images", str(labelled), "--max-p95-ms", "0.001")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["failures"][0].startswith("p95 latency")


def test_monitor_counts_unreachable_service_as_errors(labelled: Path) -> None:
    proc = cli(
        MONITOR, "--url", f"http://127.0.0.1:{free_port()}", "--images", str(labelled), "--timeout", "2", "--limit", "2"
    )
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["n"] == 2 and report["errors"] == 2 and report["accuracy"] == 0.0
    assert report["latency_ms"] is None and "2 failed requests > 0" in report["failures"]


def test_monitor_exits_2_without_labelled_images(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    assert cli(MONITOR, "--url", "http://127.0.0.1:1", "--images", str(tmp_path)).returncode == 2
    assert cli(MONITOR, "--url", "http://127.0.0.1:1", "--images", str(tmp_path / "missing")).returncode == 2


# ------------------------------------------------------------------ healthcheck
def test_healthcheck_passes_when_ready_and_fails_when_down(service: ServiceProcess) -> None:
    assert cli(HEALTH, "--url", f"{service.url}/ready").returncode == 0
    down = cli(HEALTH, "--url", f"http://127.0.0.1:{free_port()}/ready", "--timeout", "2")
    assert down.returncode == 1 and "unhealthy" in down.stderr
    missing = cli(HEALTH, "--url", f"{service.url}/no-such-route")
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr
