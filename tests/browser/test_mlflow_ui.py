"""The MLflow UI (shipped inside mlflow's wheel, so it works offline) in a real Chromium:
a training run logged to `mlflow server` (SQLite store) is listed, and its page lists its metrics."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers.browser import WAIT_S
from tests.helpers.network import free_port, wait_for_200

pytestmark = pytest.mark.slow

RUN_NAME = "browser-check-run"
METRICS = {"val_accuracy": [0.61, 0.72, 0.78], "train_loss": [0.69, 0.52, 0.41]}


@dataclass
class MlflowUi:
    url: str
    experiment_id: str
    run_id: str


@pytest.fixture(scope="module")
def mlflow_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowUi]:
    work = tmp_path_factory.mktemp("mlflow")
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    port = free_port()
    store = f"sqlite:///{work}/mlflow.db"
    command = [mlflow, "server", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--artifacts-destination", str(work / "artifacts"), "--workers", "1"]
    log = work / "server.log"
    # Its own session, so teardown can stop the server and the uvicorn worker it forks in one signal.
    proc = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=work, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_200(f"{url}/health", proc, log, within_s=120, poll_s=0.5)
        # Logged through the server, as a training run in the compose stack does.
        client = MlflowClient(tracking_uri=url)
        experiment_id = client.create_experiment("browser-check")
        run = client.create_run(experiment_id, run_name=RUN_NAME)
        client.log_param(run.info.run_id, "epochs", "3")
        for key, values in METRICS.items():
            for step, value in enumerate(values):
                client.log_metric(run.info.run_id, key, value, step=step)
        client.set_terminated(run.info.run_id)
        yield MlflowUi(url, experiment_id, run.info.run_id)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def page_text(browser: Chrome) -> str:
    return browser.find_element(By.TAG_NAME, "body").text


def test_mlflow_ui_lists_the_run_and_its_metrics(browser: Chrome, mlflow_ui: MlflowUi) -> None:
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(f"{mlflow_ui.url}/#/experiments/{mlflow_ui.experiment_id}/runs")
    link = wait.until(lambda b: b.find_elements(By.LINK_TEXT, RUN_NAME))
    assert "1 matching run" in page_text(browser)
    link[0].click()
    wait.until(lambda b: f"Metrics ({len(METRICS)})" in page_text(b))
    assert mlflow_ui.run_id in browser.current_url
    text = page_text(browser)
    for key, values in METRICS.items():
        assert f"{key}\n{values[-1]}" in text, text[:2000]  # the metrics table: name, then latest value
