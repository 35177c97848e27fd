"""What a retrain reads, on real traces in a temporary sqlite store: the labelled traces alone (found by the tag
`newscat feedback` sets), their texts from the labels where the traces kept none, and the labels prune-traces kept;
every trace the store hands out is counted, and no unlabelled one is among them. Labels written before feedback
tagged traces are still found (that part of the window is read whole), and a replaced label is one row."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow.entities import AssessmentSource, AssessmentSourceType, Expectation
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from newscat.config import build_config
from newscat.monitoring.feedback import LABELLED_SINCE_TAG, LABELLED_TAG, attach_feedback, labels_tagged_since
from newscat.monitoring.live import read_labelled_window
from newscat.monitoring.retention import prune_traces
from newscat.monitoring.retrain import labelled_live_rows
from newscat.serving.tracing import TraceSettings, parse_prediction_id
from tests.unit.monitoring.traffic import EXPERIMENT, LABELS, NAME, start_tracer, traffic

CFG = build_config({"monitor": {"experiment": EXPERIMENT}, "retrain": {"since": "3h", "min_live_rows": 10}})
HOUR_NS = 3600 * 10**9


class StoreReads:
    """The trace ids the tracking store handed out, by call: every read of a trace (its info or its spans) is one
    of these calls, whatever MLflow's client does above them."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.trace_ids: set[str] = set()

    def saw(self, call: str, found: Any) -> None:
        self.calls[call] = self.calls.get(call, 0) + 1
        items = found[0] if call == "search_traces" else found if isinstance(found, list) else [found]
        for item in items:
            info = getattr(item, "info", item)  # a Trace or a TraceInfo
            self.trace_ids.add(info.trace_id)


@pytest.fixture
def store_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[StoreReads]:
    reads = StoreReads()
    for call in ("search_traces", "get_trace", "get_trace_info", "batch_get_traces", "batch_get_trace_infos"):
        original = getattr(SqlAlchemyStore, call)

        def counted(self: SqlAlchemyStore, *args: Any, _call: str = call, _original: Any = original, **kw: Any) -> Any:
            found = _original(self, *args, **kw)
            reads.saw(_call, found)
            return found

        monkeypatch.setattr(SqlAlchemyStore, call, counted)
    yield reads


def _serve(tracer: Any, texts: list[str], probabilities: np.ndarray, start_ns: int | None = None) -> list[str]:
    ids = tracer.record(texts, probabilities, np.zeros(len(texts), bool), start_ns=start_ns or time.time_ns())
    assert ids is not None, tracer.report()
    time.sleep(0.002)  # each request its own millisecond: "oldest first" is well defined
    return ids


def _labels(ids: list[str], texts: list[str], probabilities: np.ndarray) -> list[dict[str, str]]:
    """Labels that differ from the served answers, each with its text."""
    truth = [LABELS[(int(p.argmax()) + 1) % 4] for p in probabilities]
    return [{"id": i, "label": t, "text": n} for i, t, n in zip(ids, truth, texts, strict=True)]


def test_retrain_reads_the_labelled_traces_and_kept_labels_and_no_unlabelled_trace(
    champion: str, store_reads: StoreReads
) -> None:
    tracer = start_tracer(TraceSettings(experiment=EXPERIMENT, model_uri=f"models:/{NAME}@champion", texts=False))
    news, probabilities = traffic(np.random.default_rng(11), 90, [0.25] * 4, 8)
    news = [f"story {i} {text}" for i, text in enumerate(news)]  # distinct, not near-duplicates
    pair = lambda i: (news[2 * i : 2 * i + 2], probabilities[2 * i : 2 * i + 2])  # noqa: E731

    # Two hours ago: one request, labelled (feedback tags it and marks the experiment), then pruned: kept labels.
    old = _serve(tracer, *pair(0), start_ns=time.time_ns() - 2 * HOUR_NS)
    assert tracer.wait_idle(60), tracer.report()
    assert not attach_feedback(_labels(old, *pair(0)), source="desk").refused
    assert prune_traces("1h", experiment=EXPERIMENT).kept_labels == 2

    # Now: 44 requests of two texts, 4 of them labelled (with their texts: the traces kept none).
    labelled_requests = {5, 15, 25, 35}
    ids = {request: _serve(tracer, *pair(request)) for request in range(1, 45)}
    assert tracer.wait_idle(60), tracer.report()
    rows = [row for r in sorted(labelled_requests) for row in _labels(ids[r], *pair(r))]
    assert not attach_feedback(rows, source="desk").refused
    labelled_traces = {parse_prediction_id(ids[r][0])[0] for r in labelled_requests}
    experiment_id = mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
    assert len(mlflow.search_traces(locations=[experiment_id], return_type="list")) == 44

    store_reads.calls.clear()
    store_reads.trace_ids.clear()
    live = labelled_live_rows(CFG, champion)
    # The kept labels (two hours ago) and the 8 labelled live texts, oldest first; the newest 6 held out.
    expected = [row["text"] for row in _labels(old, *pair(0))] + [row["text"] for row in rows]
    assert list(live.train["text"]) + list(live.holdout["text"]) == expected
    assert list(live.train["label"]) + list(live.holdout["label"]) == [
        *(row["label"] for row in _labels(old, *pair(0))),
        *(row["label"] for row in rows),
    ]
    assert len(live.holdout) == 6 and live.window.traces == 4
    assert store_reads.trace_ids == labelled_traces  # the 40 unlabelled traces were never read
    assert "get_trace" not in store_reads.calls  # no read per trace: the texts came with the searched labels


def test_labels_written_before_feedback_tagged_traces_are_still_found(champion: str, store_reads: StoreReads) -> None:
    tracer = start_tracer(TraceSettings(experiment=EXPERIMENT, model_uri=f"models:/{NAME}@champion", texts=True))
    news, probabilities = traffic(np.random.default_rng(12), 24, [0.25] * 4, 8)
    news = [f"story {i} {text}" for i, text in enumerate(news)]
    ids = [i for r in range(12) for i in _serve(tracer, news[2 * r : 2 * r + 2], probabilities[2 * r : 2 * r + 2])]
    assert tracer.wait_idle(60), tracer.report()
    truth = [LABELS[(int(p.argmax()) + 1) % 4] for p in probabilities]
    # An older newscat labelled the first 16 texts: expectations, no tag, no mark on the experiment.
    who = AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id="old-desk")
    for prediction_id, label in zip(ids[:16], truth[:16], strict=True):
        trace_id, row = parse_prediction_id(prediction_id)
        mlflow.log_assessment(trace_id, Expectation(name=f"true_label[{row}]", value=label, source=who))
    experiment_id = mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
    assert labels_tagged_since(experiment_id) is None

    live = labelled_live_rows(CFG, champion)  # no mark: the whole window is read, as before
    assert list(live.train["text"]) + list(live.holdout["text"]) == news[:16]
    assert len(store_reads.trace_ids) == 12  # all of it

    # This newscat labels 4 more: tagged, and the experiment marked from now; the untagged 16 are still found.
    assert not attach_feedback([{"id": i, "label": t} for i, t in zip(ids[16:20], truth[16:20], strict=True)]).refused
    since = labels_tagged_since(experiment_id)
    assert since is not None and since >= max(
        t.info.request_time for t in mlflow.search_traces(locations=[experiment_id], return_type="list")
    )
    assert mlflow.MlflowClient().get_experiment(experiment_id).tags[LABELLED_SINCE_TAG] == str(since)
    live = labelled_live_rows(CFG, champion)
    assert list(live.train["text"]) + list(live.holdout["text"]) == news[:20]
    assert list(live.train["label"]) + list(live.holdout["label"]) == truth[:20]

    # The mark stays where it was: a later feedback does not move it.
    assert not attach_feedback([{"id": ids[20], "label": truth[20]}]).refused
    assert labels_tagged_since(experiment_id) == since


def test_a_replaced_or_resent_label_is_one_row_with_the_last_label(champion: str) -> None:
    tracer = start_tracer(TraceSettings(experiment=EXPERIMENT, model_uri=f"models:/{NAME}@champion", texts=False))
    news, probabilities = traffic(np.random.default_rng(13), 12, [0.25] * 4, 8)
    news = [f"story {i} {text}" for i, text in enumerate(news)]
    ids = [i for r in range(6) for i in _serve(tracer, news[2 * r : 2 * r + 2], probabilities[2 * r : 2 * r + 2])]
    assert tracer.wait_idle(60), tracer.report()
    rows = _labels(ids, news, probabilities)
    assert not attach_feedback(rows[:11], source="desk").refused  # the last text without its label for now
    again = attach_feedback(rows[:11], source="desk")  # the whole file sent again: nothing written
    assert len(again.unchanged) == 11 and not again.written

    first = rows[0]["label"]
    other = next(label for label in LABELS if label != first)
    # Replaced without its text: the new label keeps the text the old one was given with.
    replaced = attach_feedback([{"id": rows[0]["id"], "label": other}], source="chief", replace=True)
    assert replaced.outcomes[0].written == f"replaced {first!r}"
    assert not attach_feedback([{**rows[11], "text": None}], source="desk").refused  # labelled without its text
    assert not attach_feedback([rows[11]], source="desk").refused  # ... then the text added: one row, with it

    experiment_id = mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
    window = read_labelled_window(experiment_id, champion, 0, time.time_ns() // 10**6)
    assert window.traces == 6 and len(window.answers) == 12
    assert list(window.answers.groupby(["trace_id", "row"]).size().unique()) == [1]
    answers = window.answers.sort_values(["timestamp_ms", "row"])
    assert list(answers["true_label"]) == [other, *(row["label"] for row in rows[1:])]
    assert list(answers["text"]) == news
    tags = {t.info.tags.get(LABELLED_TAG) for t in mlflow.search_traces(locations=[experiment_id], return_type="list")}
    assert tags == {"true"}

    live = labelled_live_rows(CFG, champion)
    assert live.train["label"].iloc[0] == other and len(live.train) + len(live.holdout) == 12
