"""The champion (set by `-P promote=auto`) served by a real `mlflow models serve`, queried in all four formats."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import CLASSES, MODEL_NAME, serve_model, tool_env
from tests.integration.conftest import TrackedStudy

pytestmark = pytest.mark.integration
MAX_BATCH = 8
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
    env["NEWSCAT_MAX_BATCH"] = str(MAX_BATCH)
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


# Every kind of client mistake: (body, what the 400's message must say).
BAD_REQUESTS = {
    "wrong column": ({"dataframe_records": [{"headline": "x"}]}, "needs a column named 'text'; got 'headline'"),
    "extra column": ({"dataframe_split": {"columns": ["text", "id"], "data": [["x", 1]]}}, "unexpected column(s) 'id'"),
    "number": ({"inputs": {"text": [7]}}, "row 0 is the int"),
    "numbers": ({"inputs": [1, 2]}, "row 0 is the int"),
    "boolean": ({"dataframe_records": [{"text": True}]}, "row 0 is the boolean True"),
    "null": ({"inputs": ["fine", None]}, "row 1 is null"),
    "null in a frame": ({"dataframe_split": {"columns": ["text"], "data": [[None]]}}, "row 0 is null"),
    "nested list": ({"inputs": {"text": [["a", "b"]]}}, "flat list of strings, got a 2-D array"),
    "nested object": ({"dataframe_records": [{"text": {"a": 1}}]}, "row 0 is a nested dict"),
    "rows of lists": ({"inputs": [["a"], ["b"]]}, "flat list of strings, got a 2-D array"),
    "shape mismatch": ({"dataframe_split": {"columns": ["text"], "data": [["a", "b"]]}}, "1 columns passed"),
    "no input field": ({"texts": ["a"]}, "exactly one of the input fields"),
    "two input fields": ({"inputs": ["a"], "instances": ["b"]}, "exactly one of the input fields"),
    "not an object": (["a"], "must be a JSON dictionary"),
    "too many texts": ({"inputs": ["x"] * (MAX_BATCH + 1)}, f"the limit is {MAX_BATCH} (NEWSCAT_MAX_BATCH"),
}


@pytest.mark.parametrize(("body", "message"), BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_every_malformed_request_is_a_400_that_says_what_is_wrong(server: str, body: object, message: str) -> None:
    response = _post(server, body)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


@pytest.mark.parametrize(
    ("data", "content_type", "status", "message"),
    [
        (b"Stocks rally", "application/json", 400, "valid JSON"),
        (b"", "application/json", 400, "valid JSON"),
        (b'{"inputs": ["\xff"]}', "application/json", 400, "UnicodeDecodeError"),
        (b"Stocks rally", "text/plain", 415, "only supports the following content types"),
        (b"headline\nStocks rally\n", "text/csv", 400, "needs a column named 'text'; got 'headline'"),
    ],
    ids=["not json", "empty body", "not utf-8", "wrong content type", "csv without text column"],
)
def test_bodies_that_are_not_usable_json_are_4xx(
    server: str, data: bytes, content_type: str, status: int, message: str
) -> None:
    response = requests.post(f"{server}/invocations", data=data, headers={"Content-Type": content_type}, timeout=60)
    assert response.status_code == status, response.text
    assert message in response.text


def test_empty_and_odd_unicode_texts_get_predictions(server: str) -> None:
    texts = ["", "   ", "\u200b\u200b", "\u202eelbat\u202c", "\x00\x07\x1b[31m", "🚀📈🏈", "مرحبا بالعالم"]
    texts.append("a\u0301" * 40)  # combining accents
    response = _post(server, {"inputs": texts})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(texts)
    assert all(p["label"] in CLASSES and sum(p["probabilities"].values()) == pytest.approx(1.0) for p in predictions)
    assert _post(server, {"inputs": []}).json() == {"predictions": []}


def _concurrently(url: str, bodies: list[object]) -> list[requests.Response]:
    """Post every body at once from its own thread (the server merges them into shared passes)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda body: _post(url, body), bodies))


def test_one_text_gets_one_answer_alone_in_batches_and_among_other_clients(server: str) -> None:
    """The same text gets the same probabilities (within 1e-5) sent alone, inside batches of other texts of every
    length, and while other clients' requests are merged with it into the same forward passes."""
    text = "Investors sell Boeing stock on merger worries as oil prices climb"
    others = [f"{h} " * k for h in HEADLINES for k in (1, 3, 9)] + ["", "Goal!", "x" * 400]
    alone = _post(server, {"inputs": [text]}).json()["predictions"][0]["probabilities"]
    bodies: list[object] = []
    for i in range(12):
        batch = others[i % 4 : i % 4 + 1 + i % (MAX_BATCH - 1)][: MAX_BATCH - 1]
        bodies.append({"inputs": [*batch[: i % 3], text, *batch[i % 3 :]]})
        bodies.append({"inputs": others[i % len(others) : i % len(others) + 2]})  # another client's texts
    gaps = []
    for body, response in zip(bodies, _concurrently(server, bodies), strict=True):
        assert response.status_code == 200, response.text
        for sent, prediction in zip(body["inputs"], response.json()["predictions"], strict=True):
            if sent == text:
                gaps.extend(abs(prediction["probabilities"][c] - alone[c]) for c in CLASSES)
    assert len(gaps) == 12 * len(CLASSES) and max(gaps) <= 1e-5


def test_a_bad_text_fails_only_its_own_request_when_merged_with_others(server: str) -> None:
    """A lone surrogate (valid JSON, not valid Unicode) in row 1 of one request: that request gets a 400 naming the
    row; the requests answered in the same passes get their predictions."""
    bad = {"inputs": [HEADLINES[0], "\ud800 broken", HEADLINES[1]]}
    good = [{"inputs": [h, h + " again"]} for h in HEADLINES * 4]
    responses = _concurrently(server, [*good[:4], bad, *good[4:]])
    assert responses[4].status_code == 400
    assert "row 1 is not valid Unicode text" in responses[4].json()["message"]
    assert all(r.status_code == 200 and len(r.json()["predictions"]) == 2 for i, r in enumerate(responses) if i != 4)


def test_long_texts_are_truncated_and_flagged(server: str) -> None:
    long = " ".join(HEADLINES * 200)  # ~2,000 words; the model reads its first max_length tokens
    predictions = _post(server, {"inputs": [long, HEADLINES[0]]}).json()["predictions"]
    assert [p["truncated"] for p in predictions] == [True, False]
    first_words = _post(server, {"inputs": [" ".join(HEADLINES * 20)]}).json()["predictions"][0]
    # Same first 32 tokens, same answer. Within 0.005: the int8 path quantizes activations per batch, so a text's
    # probabilities move in the third decimal with the texts that share its batch (its label agreement is gated).
    assert first_words["label"] == predictions[0]["label"]
    assert first_words["probabilities"] == pytest.approx(predictions[0]["probabilities"], abs=5e-3)


def test_champion_serves_the_promoted_version(server: str, tracked_study: TrackedStudy, client) -> None:
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    challenger = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    assert champion.version == challenger.version
    assert requests.get(f"{server}/health", timeout=5).status_code == 200


# Any JSON value, nested a few levels, with the strings and numbers that break parsers and casts.
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
_KEYS = st.sampled_from(["inputs", "instances", "dataframe_split", "dataframe_records", "params", "text", ""])
_BODIES = st.one_of(
    _JSON,  # anything at the top level
    st.dictionaries(_KEYS, _JSON, min_size=1, max_size=3),  # the scoring server's keys, holding anything
    st.builds(lambda data: {"dataframe_split": {"columns": ["text"], "data": data}}, _JSON),
    st.builds(lambda rows: {"dataframe_records": rows}, st.lists(st.dictionaries(st.just("text"), _JSON), max_size=4)),
    st.builds(lambda texts: {"inputs": texts}, st.lists(st.text(max_size=200) | _JSON, max_size=6)),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_BODIES)
def test_generated_bodies_get_a_200_or_a_4xx_with_a_message_never_a_5xx(server: str, body: object) -> None:
    response = _post(server, body)
    assert response.status_code < 500, (body, response.text)
    if response.status_code != 200:
        assert response.status_code >= 400 and response.json()["message"], (body, response.text)


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_generated_raw_bytes_never_get_a_5xx_and_the_server_keeps_answering(server: str, data: bytes) -> None:
    response = requests.post(
        f"{server}/invocations", data=data, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert response.status_code < 500, (data, response.text)
    assert _post(server, {"inputs": HEADLINES}).status_code == 200  # still serving
