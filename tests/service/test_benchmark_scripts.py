"""The benchmark scripts still run end to end and print every figure the README quotes.

Only their output's shape is checked: timings belong in the benchmark's printout, not in a test.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.paths import REPO

SERVICE_ROWS = (
    "workers",
    "floor / server CPU",
    "ready after start (s)",
    "p50 latency c=1 (ms)",
    "p99 latency c=1 (ms)",
    "throughput c=8 (req/s)",
    "server CPU/request c=8 (ms)",
    "client CPU/request c=8 (ms)",
    "server RSS (MB)",
    "non-200 responses",
)


def test_service_benchmark_serves_real_uploads_and_prints_every_figure() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_service.py", "--workers", "1,2", "--requests", "20"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("host: ") and "ms per image on 1 thread" in line for line in lines), result.stdout
    assert any(line.startswith("floor: decode ") for line in lines), result.stdout
    table = {line[:28].strip(): line[28:].split() for line in lines if line[:28].strip() in SERVICE_ROWS}
    assert set(table) == set(SERVICE_ROWS), result.stdout
    assert table["non-200 responses"][:2] == ["0", "0"], result.stdout
    assert table["workers"][:2] == ["1", "2"], result.stdout  # the second server really ran two workers
    assert float(table["throughput c=8 (req/s)"][0]) > 0


def test_model_benchmark_times_the_bundled_model_and_labels_the_samples() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_model.py", "--runs", "20"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith(str(REPO / "models" / "model.onnx")))
    assert "cat->cat" in row and "dog->dog" in row, result.stdout


@pytest.mark.slow
def test_soak_reports_statuses_goodput_latency_and_memory_per_window() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/soak.py", "--seconds", "4", "--clients", "4", "--window", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    windows = [line.split() for line in lines if line.strip()[:1].isdigit()]
    assert len(windows) == 2 and all(len(row) == 9 for row in windows), result.stdout  # span, s, 7 figures
    assert sum(int(row[2]) for row in windows) > 0 and all(row[4] == "0" for row in windows), result.stdout
    assert any(line.startswith("RSS last/first window: ") for line in lines), result.stdout
    assert lines[-1].endswith(": met"), result.stdout
