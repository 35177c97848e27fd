"""The MLflow UI workflow in a real browser: set `champion` on a model page, then serve `@champion`.

A real `mlflow server` on the tiny study's store, Debian's headless Chromium driven by Selenium (chromedriver from
the chromium-driver package; `.ci/run` installs both), and a real `mlflow models serve` afterwards. Screenshots go
to $NEWSCAT_SCREENSHOT_DIR (the README's come from there) or to the test's temp dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.tracking import MlflowClient

from newscat.registry.versions import move_alias
from newscat.serving.tracing import SCORING_SERVER_ENV
from newscat.tracking.models import download_model, load_model, log_checkpoint_model
from tests.helpers import MODEL_NAME, SERVER_WORKERS, running, serve_model, tool_env
from tests.integration.conftest import TrackedStudy

pytestmark = pytest.mark.integration
UI_MODEL = "newscat-ui"
HEADLINE = "Shares of Intel rise after quarterly earnings"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
IMPLICIT_WAIT_S = 20  # how long a lookup waits for the UI to draw what it looks for


@pytest.fixture(scope="module")
def ui_model(tracked_study: TrackedStudy) -> MlflowClient:
    """Version 1: the tiny study's model (champion); version 2: the same with its classifier scaled down, so the
    two answer with different scores and the served version can be told apart."""
    from safetensors.torch import load_file, save_file

    mlflow.set_tracking_uri(tracked_study.tracking_uri)
    client = MlflowClient(tracking_uri=tracked_study.tracking_uri)
    first = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    client.create_registered_model(UI_MODEL)
    client.create_model_version(UI_MODEL, source=first.source, run_id=first.run_id)
    classifier = download_model(first.source, tracked_study.root / "ui-model") / "artifacts" / "classifier"
    weights = load_file(classifier / "model.safetensors")
    weights = {k: v * 0.5 if k.startswith("classifier.") else v for k, v in weights.items()}
    save_file(weights, classifier / "model.safetensors", metadata={"format": "pt"})
    mlflow.set_experiment("ui")
    with mlflow.start_run(run_name="scaled-classifier"):
        scaled = log_checkpoint_model(
            classifier, name="scaled", step=1, params={}, tags={}, max_length=32, base_model="tiny"
        )
    mlflow.register_model(f"models:/{scaled}", UI_MODEL)
    move_alias(UI_MODEL, "champion", "1", reason="initial champion")
    return client


@pytest.fixture(scope="module")
def ui_server(tracked_study: TrackedStudy, ui_model: MlflowClient) -> Iterator[str]:
    command = ["mlflow", "server", "--backend-store-uri", tracked_study.tracking_uri, "--host", "127.0.0.1"]
    command += ["--workers", str(SERVER_WORKERS)]
    env = tool_env(tracked_study.tracking_uri)
    with running([*command, "--port", "{port}"], env, tracked_study.root / "ui-server.log", "/health") as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: apt-get install chromium chromium-driver (.ci/run does)")
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(IMPLICIT_WAIT_S)
    yield driver
    driver.quit()


def _close_assistant(browser) -> None:
    """Close the UI's assistant side panel, so that screenshots show the page itself."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    for button in browser.find_elements(By.XPATH, "//button[@aria-label='Close']"):
        with contextlib.suppress(WebDriverException):  # hidden or already gone: nothing to close
            button.click()


def _screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("NEWSCAT_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _served_score(url: str) -> float:
    body = json.dumps({"inputs": [HEADLINE]})
    response = requests.post(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]["score"]


def test_champion_set_in_the_ui_is_what_gets_served(
    tracked_study: TrackedStudy, ui_model: MlflowClient, ui_server: str, browser, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    shots = _screenshots(tmp_path)
    experiment = ui_model.get_experiment_by_name("tiny").experiment_id
    browser.get(f"{ui_server}/#/experiments/{experiment}/runs?workflowType=machine_learning")
    parent = f"//a[contains(@href, '/runs/{tracked_study.parent_run_id}')]"
    browser.find_element(By.XPATH, f"{parent}/ancestor::span[contains(@class, 'ag-cell-value')]//button").click()
    browser.find_element(By.XPATH, "//a[contains(., 'trial-0')]")  # the nested trial runs unfold
    _close_assistant(browser)
    time.sleep(2)  # let the runs table settle before the picture
    browser.save_screenshot(str(shots / "ui-study-runs.png"))

    browser.get(f"{ui_server}/#/models/{UI_MODEL}/versions/2")
    browser.find_element(By.XPATH, "//button[normalize-space()='Add']").click()
    field = browser.find_element(By.XPATH, "//div[@role='dialog']//input")
    field.send_keys("champion")
    field.send_keys(Keys.ENTER)
    browser.find_element(By.XPATH, "//div[@role='dialog']//button[normalize-space()='Save aliases']").click()
    deadline = time.monotonic() + 30
    while str(ui_model.get_model_version_by_alias(UI_MODEL, "champion").version) != "2":
        assert time.monotonic() < deadline, "the UI did not move the champion alias"
        time.sleep(0.5)
    browser.get(f"{ui_server}/#/models/{UI_MODEL}")
    browser.find_element(By.XPATH, "//*[contains(text(), 'champion')]")
    _close_assistant(browser)
    time.sleep(2)
    browser.save_screenshot(str(shots / "ui-model-page.png"))
    assert (shots / "ui-study-runs.png").stat().st_size > 10_000 and (shots / "ui-model-page.png").stat().st_size

    expected = {
        version: load_model(f"models:/{UI_MODEL}/{version}").predict(pd.DataFrame({"text": [HEADLINE]}))["score"][0]
        for version in ("1", "2")
    }
    assert not np.isclose(expected["1"], expected["2"])  # the versions are told apart by their scores
    env = tool_env(tracked_study.tracking_uri)
    with serve_model(f"models:/{UI_MODEL}@champion", env, tracked_study.root / "ui-serve.log") as url:
        assert _served_score(url) == pytest.approx(expected["2"], abs=1e-6)


def _cells(browser, column: str) -> list[str]:
    """The texts of one column of the Models tab's grid, top to bottom (ag-grid splits a row over containers)."""
    from selenium.webdriver.common.by import By

    cells = browser.find_elements(
        By.XPATH, f"//div[@role='row'][@row-index]/div[@role='gridcell'][contains(@col-id, '{column}')]"
    )
    by_row = {int(cell.find_element(By.XPATH, "..").get_attribute("row-index")): cell.text for cell in cells}
    return [by_row[index].splitlines()[-1] if by_row[index] else "" for index in sorted(by_row)]


def _scrolled_cells(browser, column: str) -> list[str]:
    """A column's texts, scrolling the grid to the right until ag-grid renders it (it draws visible columns only)."""
    scroll = (
        "for (const e of document.querySelectorAll('.ag-body-horizontal-scroll-viewport, .ag-center-cols-viewport,"
        " .ag-header-viewport')) e.scrollLeft = arguments[0];"
    )
    browser.implicitly_wait(0)  # an empty look is the common case here: do not wait 20 s on each
    try:
        for left in range(0, 40_000, 600):
            browser.execute_script(scroll, left)
            time.sleep(0.3)
            found = _cells(browser, column)
            if found:
                return found
        return []
    finally:
        browser.implicitly_wait(IMPLICIT_WAIT_S)


def test_the_models_tab_lists_every_trial_model_and_one_registered_from_its_page_serves(
    tracked_study: TrackedStudy, ui_model: MlflowClient, ui_server: str, browser, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    shots = _screenshots(tmp_path)
    experiment = ui_model.get_experiment_by_name("tiny").experiment_id
    logged = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list")
    trials = [m for m in logged if m.tags["newscat.role"] == "trial"]
    accuracy = {m.name: next(x.value for x in m.metrics if x.key == "eval_accuracy") for m in trials}
    releases = [m.name for m in logged if m.tags["newscat.role"] == "release"]  # scored on test, not validation
    browser.get(f"{ui_server}/#/experiments/{experiment}/models?workflowType=machine_learning")
    browser.find_element(By.XPATH, "//div[@role='gridcell'][@col-id='name']//a[contains(., 'trial-0')]")
    _close_assistant(browser)
    browser.set_window_size(2400, 1000)  # wide enough to show the validation metrics beside the model names
    time.sleep(2)
    browser.save_screenshot(str(shots / "ui-models-tab.png"))
    names, shown = _cells(browser, "name"), _scrolled_cells(browser, "eval_accuracy")
    # Checked while the grid is still scrolled to the metrics: ag-grid draws only the headers in view, and the
    # release model's test-set columns can come first and push the validation group out of a narrower window.
    browser.find_element(By.XPATH, "//div[@role='columnheader'][contains(., 'validation')]")  # linked to the set
    browser.set_window_size(1400, 1000)
    assert sorted(names) == sorted([*accuracy, *releases]) and len(releases) == 1  # every trial's model, the release
    by_name = dict(zip(names, shown, strict=True))
    assert {n: float(by_name[n]) for n in accuracy} == pytest.approx(accuracy, abs=0.005)

    best = max(accuracy, key=accuracy.get)
    browser.find_element(By.XPATH, f"//div[@role='gridcell'][@col-id='name']//a[normalize-space()='{best}']").click()
    browser.find_element(By.XPATH, "//*[normalize-space()='Datasets used']")
    browser.find_element(By.XPATH, "//button[normalize-space()='Register model']").click()
    browser.find_element(By.ID, "selectedModel").click()
    browser.find_element(
        By.XPATH, "//div[contains(@class,'select-item-option')][contains(., 'Create New Model')]"
    ).click()
    browser.find_element(By.ID, "modelName").send_keys("newscat-from-ui")
    browser.find_element(By.XPATH, "//button[@data-testid='confirm-register-model']").click()
    deadline = time.monotonic() + 30
    while not ui_model.search_model_versions("name='newscat-from-ui'"):
        assert time.monotonic() < deadline, "the UI did not register the model"
        time.sleep(0.5)
    _close_assistant(browser)
    time.sleep(2)
    browser.save_screenshot(str(shots / "ui-logged-model.png"))
    model_id = next(m.model_id for m in logged if m.name == best)
    version = ui_model.get_model_version("newscat-from-ui", "1")
    assert version.source == f"models:/{model_id}"
    expected = load_model(f"models:/{model_id}").predict(pd.DataFrame({"text": [HEADLINE]}))["score"][0]
    env = tool_env(tracked_study.tracking_uri)
    with serve_model("models:/newscat-from-ui/1", env, tracked_study.root / "ui-serve-registered.log") as url:
        assert _served_score(url) == pytest.approx(expected, abs=1e-6)


def _traced_answers(tracked_study: TrackedStudy, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Three news items answered by the tiny champion with tracing on, as `mlflow models serve` runs it (the model's
    own tracer, no experiment named: the traces go to the LoggedModel's experiment); a true label for the first."""
    from newscat.monitoring.feedback import attach_feedback

    for name, value in {
        "NEWSCAT_TRACING": "on",
        "NEWSCAT_TRACE_MODEL_URI": f"models:/{MODEL_NAME}@champion",
        # As `mlflow models serve` loads it: only the scoring server traces, never an in-process load.
        SCORING_SERVER_ENV: "model",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NEWSCAT_TRACE_EXPERIMENT", raising=False)
    mlflow.set_tracking_uri(tracked_study.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    tracer = model.unwrap_python_model()._tracer
    deadline = time.monotonic() + 60
    while tracer.experiment_id is None and time.monotonic() < deadline:
        time.sleep(0.05)
    headlines = [HEADLINE, "Yankees beat rivals in the championship final", "Researchers unveil faster quantum chip"]
    ids = [model.predict(pd.DataFrame({"text": [text]}))["prediction_id"][0] for text in headlines]
    assert tracer.wait_idle(60) and tracer.counts == {"traced": 3}, tracer.report()
    assert not attach_feedback([{"id": ids[0], "label": "Business"}], source="ui-test").refused
    return [i.rsplit(":", 1)[0] for i in ids]


def test_the_served_models_page_lists_its_traces(
    tracked_study: TrackedStudy,
    ui_model: MlflowClient,
    ui_server: str,
    browser,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from selenium.webdriver.common.by import By

    shots = _screenshots(tmp_path)
    trace_ids = _traced_answers(tracked_study, monkeypatch)
    champion = ui_model.get_model_version_by_alias(MODEL_NAME, "champion")
    model_id = champion.model_id or champion.source.removeprefix("models:/")
    experiment = mlflow.get_logged_model(model_id).experiment_id
    assert experiment == ui_model.get_experiment_by_name("tiny").experiment_id  # the study's own experiment
    browser.get(f"{ui_server}/#/experiments/{experiment}/models/{model_id}/traces")
    for trace_id in trace_ids:  # the model page's Traces tab lists every trace the served model wrote
        browser.find_element(By.XPATH, f"//*[contains(text(), '{trace_id}')]")
    browser.find_element(By.XPATH, "//*[normalize-space()='true_label[0]']")  # the fed-back label, as a column
    for button in browser.find_elements(By.XPATH, "//button[normalize-space()='Got it']"):
        with contextlib.suppress(Exception):  # a first-visit hint over the table
            button.click()
    _close_assistant(browser)
    time.sleep(2)
    browser.save_screenshot(str(shots / "ui-model-traces.png"))
    assert (shots / "ui-model-traces.png").stat().st_size > 10_000
