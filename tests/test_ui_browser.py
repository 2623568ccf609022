"""The Fine-tune tab in a real headless Chromium, against a real api-server and a live simulated job.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``) and
selenium; no browser is ever downloaded. Without Chromium the test is skipped, except under ``CI``, where
a missing browser fails. A screenshot of the tab goes to the test's tmp dir; set
``FTEVENTS_UI_SCREENSHOT=docs/ui-screenshot.png`` to also write the documentation's picture.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import API_KEY
from test_ui_api import DAG_ID, UiAirflow, running_ui_airflow

from airflow_ftevents.simulator import JobSpec, Simulator

pytestmark = pytest.mark.airflow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)


@pytest.fixture(scope="module")
def ui_sim() -> Iterator[Simulator]:
    with Simulator(api_key=API_KEY) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def ui_airflow(
    chromium: str, tmp_path_factory: pytest.TempPathFactory, migrated_airflow_db: Path, ui_sim: Simulator
) -> Iterator[UiAirflow]:
    with running_ui_airflow(
        tmp_path_factory.mktemp("ui-browser"), migrated_airflow_db, ui_sim.base_url
    ) as airflow:
        yield airflow


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's Chromium and its driver, or a skip (a failure under CI) before any server starts."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not (shutil.which(path) or os.path.exists(path))]
    if missing:
        message = f"{', '.join(missing)} not installed (apt-get install -y chromium chromium-driver)"
        if _in_ci():
            pytest.fail(f"CI needs the browser test: {message}")
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[Any]:
    """A fresh headless Chromium (its own profile dir), quit after the test; its driver stopped by PID."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    service = DriverService(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            process = getattr(service, "process", None)
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def _frame_value(driver: Any, script: str) -> Any:
    return driver.execute_script(script)


def points_shown(driver: Any) -> int:
    return int(_frame_value(driver, "return document.getElementById('chart').dataset.points || '0'"))


def screenshot(driver: Any, path: Path) -> Path:
    """The whole page (the Airflow UI around the tab), a test artifact; back into the tab's frame after."""
    from selenium.webdriver.common.by import By

    driver.switch_to.default_content()
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, "iframe[title='Fine-tune']"))
    return path


def login(driver: Any, airflow: UiAirflow, user: str) -> None:
    """The session cookie the UI itself uses (``_token``), for a user of SimpleAuthManager."""
    driver.get(f"{airflow.base_url}/api/v2/version")
    driver.add_cookie({"name": "_token", "value": airflow.token(user), "path": "/"})


def test_fine_tune_tab_follows_a_running_job(
    browser: Any, ui_airflow: UiAirflow, ui_sim: Simulator, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    job_id = ui_sim.add_job(JobSpec(job_id="ftjob-ui-live", n_events=300, duration=60))
    run = ui_airflow.start_run(job_id)
    run_id = ui_airflow.run_id_for(job_id)
    login(browser, ui_airflow, "viewer")

    # Open the task instance's page, as a user would, and pick the plugin's tab.
    browser.get(f"{ui_airflow.base_url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/wait")
    wait = WebDriverWait(browser, 60)
    tab = wait.until(ec.element_to_be_clickable((By.XPATH, "//a[normalize-space(.)='Fine-tune']")))
    assert tab.get_attribute("href").endswith("/tasks/wait/plugin/fine-tune")
    tab.click()
    frame = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe[title='Fine-tune']")))
    assert frame.get_attribute("src").startswith(f"{ui_airflow.base_url}/ftevents/view/{DAG_ID}/")
    browser.switch_to.frame(frame)

    wait.until(lambda d: points_shown(d) > 0)
    assert browser.find_element(By.ID, "job-id").text == job_id
    first = points_shown(browser)
    assert browser.find_element(By.ID, "status").text == "running"
    assert browser.find_element(By.ID, "live").is_displayed()
    wait.until(lambda d: points_shown(d) > first)  # the page polls every 3 s and appends what is new
    screenshot(browser, tmp_path / "fine-tune-tab-running.png")

    # Once the job has finished, the page has every metrics event of the job, and stops polling.
    WebDriverWait(browser, 180).until(lambda d: d.find_element(By.ID, "status").text == "succeeded")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.body.dataset.stopped"))
    metrics = [e for e in ui_sim.events(job_id) if e["type"] == "metrics"]
    assert points_shown(browser) == len(metrics)
    last_step = browser.execute_script("return document.getElementById('chart').dataset.lastStep")
    assert last_step == str(metrics[-1]["data"]["step"])
    assert browser.find_elements(By.CSS_SELECTOR, "#chart polyline.full_valid_loss")
    newest = ui_sim.events(job_id)[-1]
    first_row = browser.find_element(By.CSS_SELECTOR, "#events tbody tr")
    assert first_row.get_attribute("data-event-id") == newest["id"]
    assert newest["message"] in first_row.text
    assert browser.find_element(By.ID, "fine-tuned-model").text == ui_sim.job(job_id)["fine_tuned_model"]
    finished = screenshot(browser, tmp_path / "fine-tune-tab-finished.png")
    if target := os.environ.get("FTEVENTS_UI_SCREENSHOT"):
        shutil.copy(finished, target)
    with contextlib.suppress(Exception):
        run.wait(timeout=60)


def test_failed_job_highlights_its_error_events(
    browser: Any, ui_airflow: UiAirflow, ui_sim: Simulator
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    job_id = ui_sim.add_job(JobSpec(job_id="ftjob-ui-failed", n_events=120, duration=0, outcome="failed"))
    run_id = ui_airflow.run_to_end(job_id)
    login(browser, ui_airflow, "admin")
    browser.get(f"{ui_airflow.base_url}/ftevents/view/{DAG_ID}/{quote(run_id, safe='')}/wait")
    WebDriverWait(browser, 60).until(lambda d: d.execute_script("return document.body.dataset.stopped"))
    assert browser.find_element(By.ID, "status").text == "failed"
    errors = [e for e in ui_sim.events(job_id) if e["level"] == "error"]
    highlighted = browser.find_elements(By.CSS_SELECTOR, "#events tbody tr.level-error")
    assert [row.get_attribute("data-event-id") for row in highlighted] == [e["id"] for e in reversed(errors)]
    assert browser.find_element(By.ID, "error").is_displayed()
    assert ui_sim.job(job_id)["error"]["message"] in browser.find_element(By.ID, "error").text


def test_user_without_access_sees_the_refusal(browser: Any, ui_airflow: UiAirflow, ui_sim: Simulator) -> None:
    from selenium.webdriver.common.by import By

    job_id = ui_sim.add_job(JobSpec(job_id="ftjob-ui-refused", n_events=60, duration=0))
    run_id = ui_airflow.run_to_end(job_id)
    login(browser, ui_airflow, "nobody")
    browser.get(f"{ui_airflow.base_url}/ftevents/view/{DAG_ID}/{quote(run_id, safe='')}/wait")
    body = browser.find_element(By.TAG_NAME, "body").text
    assert '{"detail":"Forbidden"}' in body
    assert browser.find_elements(By.ID, "chart") == []
