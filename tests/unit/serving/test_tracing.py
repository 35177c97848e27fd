"""Request tracing: the per-text records, the switches, and real traces written to a temporary sqlite store by the
tracer thread, linked to a LoggedModel by MLflow's prediction context, within the CPU budget, and never raising."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.context import Context, set_prediction_context

from newscat.serving import tracing
from newscat.serving.tracing import (
    CLASSES_TAG,
    REGISTERED_MODEL_TAG,
    REGISTERED_VERSION_TAG,
    ROWS_TAG,
    Tracer,
    TraceSettings,
    parse_prediction_id,
    registered_model,
    text_records,
)

LABELS = ["World", "Sports", "Business", "Sci/Tech"]
PROBABILITIES = np.array([[0.1, 0.7, 0.1, 0.1], [0.05, 0.05, 0.0000004, 0.8999996]])


def test_records_hold_digest_length_tokens_flag_and_answer_but_no_text_unless_asked() -> None:
    texts = ["Striker scores twice", "Chip \U0001f680 launch"]
    records = text_records(texts, PROBABILITIES, [False, True], [5, 128], LABELS, unknown=[0, 1])
    assert records[0] == {
        "row": 0,
        "sha256": hashlib.sha256(b"Striker scores twice").hexdigest(),
        "chars": 20,
        "tokens": 5,
        "unknown": 0,
        "truncated": False,
        "label": "Sports",
        "score": 0.7,
        "probabilities": {"World": 0.1, "Sports": 0.7, "Business": 0.1, "Sci/Tech": 0.1},
    }
    assert records[1]["sha256"] == hashlib.sha256(texts[1].encode("utf-8")).hexdigest()
    assert records[1]["unknown"] == 1  # the rocket is not in the vocabulary
    assert records[1]["chars"] == 13 and records[1]["truncated"] is True and records[1]["label"] == "Sci/Tech"
    assert records[1]["probabilities"]["Business"] == 0.0  # rounded to 6 digits: small traces
    assert not any("text" in r for r in records)
    assert [r["text"] for r in text_records(texts, PROBABILITIES, [0, 0], [1, 1], LABELS, keep_texts=True)] == texts
    assert json.dumps(records)  # plain JSON: no numpy scalars left


def test_tracing_is_off_by_default_and_each_switch_is_read() -> None:
    assert TraceSettings.from_env({}) is None
    assert TraceSettings.from_env({"NEWSCAT_TRACING": "off"}) is None
    assert TraceSettings.from_env({"NEWSCAT_TRACING": "on"}) == TraceSettings()
    settings = TraceSettings.from_env(
        {
            "NEWSCAT_TRACING": "on",
            "NEWSCAT_TRACE_SAMPLING": "0.25",
            "NEWSCAT_TRACE_TEXTS": "on",
            "NEWSCAT_TRACE_EXPERIMENT": "prod-traces",
            "NEWSCAT_TRACE_MODEL_URI": "models:/newscat@champion",
            "NEWSCAT_TRACE_CPU": "0.5",
        }
    )
    assert settings == TraceSettings(0.25, True, "prod-traces", "models:/newscat@champion", 0.5)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("NEWSCAT_TRACING", "maybe", "NEWSCAT_TRACING='maybe': set on or off"),
        ("NEWSCAT_TRACE_SAMPLING", "0", "NEWSCAT_TRACE_SAMPLING='0': give a number, 0 < x <= 1"),
        ("NEWSCAT_TRACE_SAMPLING", "1.5", "0 < x <= 1"),
        ("NEWSCAT_TRACE_SAMPLING", "half", "0 < x <= 1"),
        ("NEWSCAT_TRACE_CPU", "-1", "NEWSCAT_TRACE_CPU='-1': give a number, x > 0"),
        ("NEWSCAT_TRACE_MODEL_URI", "runs:/abc/model", "give models:/<name>/<version>, models:/<name>@<alias> or"),
        ("NEWSCAT_TRACE_MODEL_URI", "models:/newscat/latest", "give models:/<name>/<version>"),
    ],
)
def test_a_bad_switch_fails_the_load_with_what_to_set(name: str, value: str, message: str) -> None:
    with pytest.raises(MlflowException, match=message.replace("(", r"\(").replace(")", r"\)")):
        TraceSettings.from_env({"NEWSCAT_TRACING": "on", name: value})


def test_model_uris_and_prediction_ids_parse() -> None:
    assert registered_model("models:/newscat/3") == ("newscat", "3", None)
    assert registered_model("models:/newscat@champion") == ("newscat", None, "champion")
    assert registered_model("models:/m-0123abcd") == ("", None, None)  # a LoggedModel
    assert parse_prediction_id("tr-0123abcd:7") == ("tr-0123abcd", 7)
    for bad in ("tr-0123abcd", "tr-0123abcd:x", ":3", "tr-1:-1"):
        with pytest.raises(ValueError, match="is not a prediction id"):
            parse_prediction_id(bad)


@pytest.fixture
def store(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A temp sqlite store; the tracer's process-wide switch to synchronous export is undone afterwards."""
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "true")
    monkeypatch.setenv("MLFLOW_TRACE_USE_ISOLATED_RANDOM_ID_GENERATOR", "false")
    yield tracking_uri
    mlflow.tracing.reset()


def _counts(texts: list[str]) -> tuple[list[int], list[int]]:
    return [len(t.split()) + 2 for t in texts], [0] * len(texts)


def _tracer(settings: TraceSettings, lines: list[str] | None = None) -> Tracer:
    log = lines.append if lines is not None else lambda line: None
    tracer = Tracer(settings, label_names=LABELS, token_counts=_counts, attributes={"newscat.engine": "x"}, log=log)
    deadline = time.monotonic() + 30
    while tracer.experiment_id is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return tracer


def test_a_request_becomes_one_trace_linked_to_the_model_and_its_registered_version(store: str) -> None:
    client = mlflow.MlflowClient()
    model = mlflow.create_external_model(name="served")
    client.create_registered_model("news")
    client.create_model_version("news", source=f"models:/{model.model_id}", model_id=model.model_id)
    client.set_registered_model_alias("news", "champion", "1")
    lines: list[str] = []
    tracer = _tracer(TraceSettings(experiment="serving-traces", model_uri="models:/news@champion"), lines)
    texts = ["Striker scores twice", "Chip launch"]
    with set_prediction_context(Context(model_id=model.model_id)):  # what pyfunc's predict opens around the model
        ids = tracer.record(texts, PROBABILITIES, np.array([False, True]), start_ns=time.time_ns())
    assert tracer.wait_idle()
    assert ids is not None and len(ids) == 2 and ids[1].endswith(":1")
    trace_id = parse_prediction_id(ids[0])[0]
    experiment = client.get_experiment_by_name("serving-traces")
    found = mlflow.search_traces(locations=[experiment.experiment_id], model_id=model.model_id, return_type="list")
    assert [t.info.trace_id for t in found] == [trace_id]
    trace = found[0]
    assert trace.info.tags[CLASSES_TAG] == json.dumps(LABELS) and trace.info.tags[ROWS_TAG] == "2"
    assert (trace.info.tags[REGISTERED_MODEL_TAG], trace.info.tags[REGISTERED_VERSION_TAG]) == ("news", "1")
    (span,) = trace.data.spans
    records = span.outputs["predictions"]
    assert [r["label"] for r in records] == ["Sports", "Sci/Tech"] and [r["tokens"] for r in records] == [5, 4]
    assert "text" not in json.dumps(span.inputs) and not any("text" in r for r in records)
    assert span.attributes["newscat.engine"] == "x"
    assert tracer.counts == {"traced": 1}
    assert "news version 1" in lines[0] and "'serving-traces'" in lines[0]


def test_trace_ids_do_not_repeat_when_the_process_seeds_random(store: str) -> None:
    """A process that trains (transformers seeds `random`) and then traces must not reuse an earlier trace's id."""
    import random

    tracer = _tracer(TraceSettings(cpu_share=100.0))
    ids = []
    for _ in range(2):
        random.seed(42)
        ids.append(tracer.record(["a b"], PROBABILITIES[:1], np.array([False]), start_ns=time.time_ns()))
    assert tracer.wait_idle() and tracer.counts == {"traced": 2}
    assert ids[0] != ids[1]


def test_the_cpu_budget_and_sampling_leave_requests_untraced_and_counted(store: str) -> None:
    tracer = _tracer(TraceSettings(cpu_share=1e-9))  # the first trace spends far more than the budget saved up
    answered = [tracer.record(["a b"], PROBABILITIES[:1], np.array([False]), start_ns=time.time_ns())]
    assert tracer.wait_idle()
    answered += [tracer.record(["a b"], PROBABILITIES[:1], np.array([False]), start_ns=time.time_ns()) for _ in "xyz"]
    assert answered[0] is not None and answered[1:] == [None, None, None]
    assert tracer.counts == {"traced": 1, "not traced: CPU budget spent": 3}
    assert "0 lost traces" in tracer.report()

    sampled = _tracer(TraceSettings(sampling=0.001))
    assert [sampled.record(["a"], PROBABILITIES[:1], np.array([False]), start_ns=0) for _ in range(50)].count(None) > 40
    assert sampled.counts["not sampled"] > 40


def test_requests_beyond_a_full_queue_go_untraced_and_are_counted(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "QUEUE_SIZE", 3)
    held = threading.Event()

    def slow_counts(texts: list[str]) -> tuple[list[int], list[int]]:  # holds the tracer thread, as a slow store would
        held.wait(30)
        return [1] * len(texts), [0] * len(texts)

    tracer = Tracer(TraceSettings(cpu_share=100.0), label_names=LABELS, token_counts=slow_counts, log=lambda _: None)
    deadline = time.monotonic() + 30
    while tracer.experiment_id is None and time.monotonic() < deadline:
        time.sleep(0.02)
    ids = [tracer.record(["a"], PROBABILITIES[:1], np.array([False]), start_ns=time.time_ns()) for _ in range(5)]
    assert [i is not None for i in ids] == [True, True, True, False, False]
    held.set()
    assert tracer.wait_idle()
    assert tracer.counts == {"traced": 3, "lost: queue full (tracking store slow or down)": 2}
    assert tracer.record(["a"], PROBABILITIES[:1], np.array([False]), start_ns=time.time_ns()) is not None  # room again


def test_a_trace_the_store_refuses_is_counted_lost_and_the_answer_is_untouched(store: str) -> None:
    tracer = _tracer(TraceSettings())
    tracer.experiment_id = "987654"  # no such experiment: the store refuses the trace
    ids = tracer.record(["a"], PROBABILITIES[:1], np.array([False]), start_ns=time.time_ns())
    assert tracer.wait_idle()
    assert ids is not None  # the id was given before the write failed: feedback on it will say "unknown id"
    assert tracer.counts == {"lost: the tracking store refused or did not answer": 1}
    assert tracer.report().startswith("newscat tracing: 1 lost traces") and "last error" in tracer.report()


def test_an_unreachable_store_neither_slows_nor_fails_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import free_port

    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "true")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    try:
        lines: list[str] = []
        tracer = Tracer(TraceSettings(), label_names=LABELS, token_counts=_counts, log=lines.append)
        began = time.perf_counter()
        answers = [tracer.record(["a"], PROBABILITIES[:1], np.array([False]), start_ns=0) for _ in range(100)]
        assert time.perf_counter() - began < 0.5  # 100 requests: no network on the request path
        assert answers == [None] * 100
        assert tracer.counts == {"lost: tracking store not reached yet": 100}
        deadline = time.monotonic() + 20
        while not lines and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lines and "the tracking store did not answer" in lines[0] and "retrying in 30 s" in lines[0]
    finally:
        mlflow.set_tracking_uri(previous)
        mlflow.tracing.reset()


def test_record_never_raises(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tracer = _tracer(TraceSettings())

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(tracing.mlflow, "start_span_no_context", broken)
    assert tracer.record(["a"], PROBABILITIES[:1], np.array([False]), start_ns=0) is None
    assert tracer.counts == {"lost": 1} and tracer.last_error == "RuntimeError: boom"


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers import fresh_classifier

    return fresh_classifier(tmp_path_factory.mktemp("model") / "classifier", max_length=8)


def test_the_logged_model_answers_ids_only_with_tracing_on_and_its_traces_are_linked_to_it(
    classifier: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from newscat.tracking.models import log_classifier_model

    with mlflow.start_run():
        model_id = log_classifier_model(classifier, name="tiny", step=0, params={}, tags={})
    texts = ["Striker scores twice as Arsenal win the cup", "Oil"]
    monkeypatch.delenv("NEWSCAT_TRACING", raising=False)
    off = mlflow.pyfunc.load_model(f"models:/{model_id}").predict(pd.DataFrame({"text": texts}))
    assert list(off.columns) == ["label", "score", "probabilities", "truncated"]  # what clients always got

    monkeypatch.setenv("NEWSCAT_TRACING", "on")
    monkeypatch.setenv("NEWSCAT_TRACE_EXPERIMENT", "served")
    monkeypatch.setenv("NEWSCAT_TRACE_MODEL_URI", f"models:/{model_id}")
    model = mlflow.pyfunc.load_model(f"models:/{model_id}")
    # newscat logs a saved pyfunc into its LoggedModel: the MLmodel file records no model id, so MLflow's own link
    # (the prediction context) has none to give; the tracer links the trace to the model the URI names.
    assert model.metadata.model_id is None
    tracer = model.unwrap_python_model()._tracer
    deadline = time.monotonic() + 30
    while tracer.experiment_id is None and time.monotonic() < deadline:
        time.sleep(0.02)
    on = model.predict(pd.DataFrame({"text": texts}))
    assert list(on.columns) == ["label", "score", "probabilities", "truncated", "prediction_id"]
    assert on.drop(columns="prediction_id").equals(off)
    assert tracer.wait_idle()
    experiment = mlflow.get_experiment_by_name("served").experiment_id
    (trace,) = mlflow.search_traces(locations=[experiment], model_id=model_id, return_type="list")
    assert list(on["prediction_id"]) == [f"{trace.info.trace_id}:0", f"{trace.info.trace_id}:1"]
    records = trace.data.spans[0].outputs["predictions"]
    assert [(r["tokens"], r["truncated"]) for r in records] == [(8, True), (3, False)]  # [CLS] oil [SEP]
    assert [r["label"] for r in records] == list(on["label"])


def test_the_tracer_thread_runs_at_the_lowest_cpu_priority(store: str) -> None:
    import os

    if not hasattr(os, "setpriority"):
        pytest.skip("thread priorities are Linux's")
    tracer = _tracer(TraceSettings())
    assert os.getpriority(os.PRIO_PROCESS, tracer._thread.native_id) == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < 19  # the request threads keep theirs
