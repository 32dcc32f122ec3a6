"""Real-browser checks: Debian's chromium driven headless through its chromium-driver.

Both come from apt (scripts/ci-system-deps.sh), so nothing is downloaded at test time.
A failing test leaves a screenshot of the page in test-artifacts/screenshots/ (git-ignored).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.helpers.paths import REPO

SCREENSHOTS = REPO / "test-artifacts" / "screenshots"


def _tool(*names: str) -> str:
    for name in names:
        if path := shutil.which(name):
            return path
    pytest.fail(
        f"none of {names} is installed; run `bash scripts/ci-system-deps.sh` (Debian's chromium and chromium-driver)",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    # Debian's chromium; GitHub's Ubuntu runners ship Google Chrome with a matching chromedriver instead.
    options.binary_location = _tool("chromium", "google-chrome")
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1600",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(_tool("chromedriver")), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    driver = getattr(item, "funcargs", {}).get("browser")
    if report.when == "call" and report.failed and driver is not None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / (re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid) + ".png")
        driver.save_screenshot(str(path))
        report.sections.append(("screenshot", str(path)))
