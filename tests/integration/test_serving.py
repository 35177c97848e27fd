"""Promote with the CLI, then a real `mlflow models serve` process answers over HTTP in all four formats."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import CLASSES
from tests.integration.conftest import MODEL_NAME, TrackedStudy, tool_env

pytestmark = pytest.mark.integration
HEADLINES = ["Yankees beat rivals in the championship final", "Shares of Intel rise after quarterly earnings"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tracked_study: TrackedStudy) -> Iterator[str]:
    env = tool_env(tracked_study.tracking_uri)
    promoted = subprocess.run(
        ["newscat", "promote", MODEL_NAME, "--from", "challenger", "--to", "champion"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert promoted.returncode == 0, promoted.stderr
    assert f"{MODEL_NAME}@champion -> version" in promoted.stdout
    port = _free_port()
    log = (tracked_study.root / "serve.log").open("w")
    process = subprocess.Popen(
        [
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{MODEL_NAME}@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert process.poll() is None, (tracked_study.root / "serve.log").read_text()[-3000:]
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(1)
        else:
            pytest.fail("mlflow models serve did not come up within 180 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _post(url: str, body: object) -> requests.Response:
    return requests.post(
        f"{url}/invocations", data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=60
    )


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": HEADLINES},
        {"dataframe_split": {"columns": ["text"], "data": [[h] for h in HEADLINES]}},
        {"dataframe_records": [{"text": h} for h in HEADLINES]},
        {"instances": [{"text": h} for h in HEADLINES]},
    ],
    ids=["inputs", "dataframe_split", "dataframe_records", "instances"],
)
def test_all_four_request_formats(server: str, body: dict) -> None:
    response = _post(server, body)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(HEADLINES)
    for prediction in predictions:
        assert prediction["label"] in CLASSES
        probabilities = prediction["probabilities"]
        assert set(probabilities) == set(CLASSES)
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction["score"] == pytest.approx(max(probabilities.values()))
        assert probabilities[prediction["label"]] == pytest.approx(prediction["score"])


def test_same_answer_in_every_format(server: str) -> None:
    a = _post(server, {"inputs": HEADLINES}).json()
    b = _post(server, {"dataframe_records": [{"text": h} for h in HEADLINES]}).json()
    assert a == b


def test_wrong_column_is_a_4xx_that_names_it(server: str) -> None:
    response = _post(server, {"dataframe_records": [{"headline": "x"}]})
    assert response.status_code == 400
    assert "text" in response.json()["message"]


def test_champion_serves_the_promoted_version(server: str, tracked_study: TrackedStudy, client) -> None:
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    challenger = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    assert champion.version == challenger.version
    assert requests.get(f"{server}/health", timeout=5).status_code == 200
