"""/docs in a real Chromium, offline: Swagger UI renders every operation of the service's
own spec, and "Try it out" on POST /predict classifies the sample cat photo."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers.browser import WAIT_S
from tests.helpers.service_process import REPO, ServiceProcess, start_service, stop_service

pytestmark = pytest.mark.slow

CAT = REPO / "deploy" / "samples" / "cat.jpg"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = start_service(REPO / "models" / "model.onnx", tmp_path_factory.mktemp("docs"))
    yield svc
    stop_service(svc)


def rendered_operations(browser: Chrome) -> list[WebElement]:
    return WebDriverWait(browser, WAIT_S).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock"))


def test_docs_renders_every_operation_of_the_spec(browser: Chrome, service: ServiceProcess) -> None:
    spec = httpx.get(f"{service.url}/openapi.json").json()
    browser.get(f"{service.url}/docs")
    shown = {
        (
            op.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text.lower(),
            op.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path"),
        )
        for op in rendered_operations(browser)
    }
    assert shown == {(method, path) for path, methods in spec["paths"].items() for method in methods}
    assert "Unable to render this definition" not in browser.find_element(By.TAG_NAME, "body").text


def test_try_it_out_uploads_the_cat_sample_and_shows_cat(browser: Chrome, service: ServiceProcess) -> None:
    browser.get(f"{service.url}/docs")
    rendered_operations(browser)
    wait = WebDriverWait(browser, WAIT_S)
    block = browser.find_element(By.ID, "operations-default-post_predict")
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(lambda _: block.find_elements(By.CSS_SELECTOR, ".try-out__btn"))[0].click()
    wait.until(lambda _: block.find_elements(By.CSS_SELECTOR, "input[type=file]"))[0].send_keys(str(Path(CAT)))
    block.find_element(By.CSS_SELECTOR, ".execute").click()
    body = wait.until(
        lambda _: block.find_elements(By.CSS_SELECTOR, ".live-responses-table .response-col_description pre")
    )
    status = block.find_element(By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status")
    assert status.text.strip() == "200"
    assert '"predicted_class": "cat"' in body[0].text
