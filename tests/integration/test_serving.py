"""The champion (set by `-P promote=auto`) served by a real `mlflow models serve`, queried in all four formats."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import CLASSES
from tests.integration.conftest import MODEL_NAME, TrackedStudy, serve_model, tool_env

pytestmark = pytest.mark.integration
HEADLINES = ["Yankees beat rivals in the championship final", "Shares of Intel rise after quarterly earnings"]


@pytest.fixture(scope="module")
def server(tracked_study: TrackedStudy) -> Iterator[str]:
    env = tool_env(tracked_study.tracking_uri)
    # `-P promote=auto` made the first version champion; promoting it again is refused, naming the alias.
    again = subprocess.run(
        ["newscat", "promote", MODEL_NAME, "--from", "challenger", "--to", "champion"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 1 and f"{MODEL_NAME}@champion is already version" in again.stderr
    with serve_model(f"models:/{MODEL_NAME}@champion", env, tracked_study.root / "serve.log") as url:
        yield url


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
