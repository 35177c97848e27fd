"""Feedback: true labels checked against real traces in a temporary sqlite store (written by the serving tracer),
all or nothing, and logged as HUMAN expectations; through the function and through `newscat feedback`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner

from newscat.cli import main
from newscat.monitoring.feedback import (
    LABELLED_TAG,
    FeedbackFileError,
    attach_feedback,
    labels_tagged_since,
    read_feedback,
)
from newscat.serving.tracing import TraceSettings, parse_prediction_id
from tests.unit.monitoring.traffic import start_tracer

LABELS = ["World", "Sports", "Business", "Sci/Tech"]


@pytest.fixture
def served(tracking_uri: str) -> list[str]:
    """Prediction ids of two traced requests (two texts, then one), as the served model answers them."""
    tracer = start_tracer(TraceSettings())
    probabilities = np.array([[0.1, 0.7, 0.1, 0.1], [0.7, 0.1, 0.1, 0.1]])
    ids = tracer.record(["a", "b"], probabilities, np.array([False, False]), start_ns=time.time_ns())
    ids += tracer.record(["c"], probabilities[:1], np.array([False]), start_ns=time.time_ns())
    assert tracer.wait_idle() and tracer.counts == {"traced": 2}
    return ids


def _expectations(prediction_id: str) -> dict[str, tuple[str, str, str]]:
    trace = mlflow.MlflowClient().get_trace(parse_prediction_id(prediction_id)[0])
    return {
        a.name: (a.value, a.source.source_type, a.source.source_id)
        for a in trace.info.assessments
        if a.expectation is not None and a.valid is not False
    }


def test_one_refused_row_and_nothing_is_written_each_refusal_named(served: list[str]) -> None:
    other = mlflow.start_span_no_context("not-newscat")  # a trace of something else in the same store
    other.end()
    mlflow.flush_trace_async_logging()  # MLflow writes its own traces on a background thread
    rows = [
        {"id": served[0], "label": "Sports"},  # fine on its own
        {"id": "tr-00000000000000000000000000000000:0", "label": "Sports"},
        {"id": served[1], "label": "Weather"},
        {"id": served[0], "label": "World"},  # the same prediction again
        {"id": served[2].rsplit(":", 1)[0] + ":5", "label": "World"},
        {"id": "no-row-here", "label": "World"},
        {"id": served[2], "label": ""},
        {"id": f"{other.trace_id}:0", "label": "World"},
    ]
    report = attach_feedback(rows, source="alice")
    reasons = [o.refused for o in report.outcomes]
    assert reasons[0] == ""
    assert reasons[1] == "unknown id: no trace tr-00000000000000000000000000000000 in the tracking store"
    assert reasons[2] == "unknown label 'Weather': the model's classes are World, Sports, Business, Sci/Tech"
    assert reasons[3] == "duplicate of entry 1 (same prediction, another label or text)"
    assert reasons[4] == "unknown id: row 5 of a request that held 1 text(s)"
    assert "is not a prediction id" in reasons[5] and reasons[6] == "no label"
    assert reasons[7] == f"trace {other.trace_id} is not a newscat prediction"
    assert report.text().splitlines()[-2] == "7 of 8 rows refused: nothing written"
    unknown = f"tr-00000000000000000000000000000000:0, {served[2].rsplit(':', 1)[0]}:5"
    assert report.text().splitlines()[-1] == f"2 unknown id(s): {unknown} (--skip-unknown writes the other rows anyway)"
    assert "entry 1: " in report.text() and "valid, not written" in report.text()
    assert all(_expectations(i) == {} for i in served)
    assert not any(_labelled_tag(i) for i in served)  # nor a tag saying labelled, nor the experiment's mark
    trace = mlflow.MlflowClient().get_trace(parse_prediction_id(served[0])[0])
    assert labels_tagged_since(trace.info.experiment_id) is None


def _labelled_tag(prediction_id: str) -> str | None:
    return mlflow.MlflowClient().get_trace(parse_prediction_id(prediction_id)[0]).info.tags.get(LABELLED_TAG)


def test_good_rows_become_human_expectations_and_a_second_label_needs_replace(served: list[str]) -> None:
    rows = [{"id": served[0], "label": "Sports"}, {"id": served[2], "label": "Business"}]
    report = attach_feedback(rows, source="bob")
    assert not report.refused and report.text().splitlines()[-1] == "2 true labels written"
    assert _expectations(served[0]) == {"true_label[0]": ("Sports", "HUMAN", "bob")}
    assert _expectations(served[2]) == {"true_label[0]": ("Business", "HUMAN", "bob")}
    # Each labelled trace is tagged, for retrain to search; its experiment says since when.
    assert (_labelled_tag(served[0]), _labelled_tag(served[2])) == ("true", "true")
    trace = mlflow.MlflowClient().get_trace(parse_prediction_id(served[0])[0])
    assert labels_tagged_since(trace.info.experiment_id) is not None

    again = attach_feedback([{"id": served[0], "label": "World"}, {"id": served[1], "label": "World"}], source="eve")
    assert again.outcomes[0].refused == "already labelled 'Sports' by bob; use --replace to change it"
    assert _expectations(served[0]) == {"true_label[0]": ("Sports", "HUMAN", "bob")}  # row 1 was not written either

    replaced = attach_feedback([{"id": served[0], "label": "World"}], source="eve", replace=True)
    assert not replaced.refused and replaced.outcomes[0].written == "replaced 'Sports'"
    assert _expectations(served[0]) == {"true_label[0]": ("World", "HUMAN", "eve")}
    every = mlflow.MlflowClient().get_trace(parse_prediction_id(served[0])[0]).info.assessments
    assert sorted((a.value, a.valid) for a in every) == [("Sports", False), ("World", True)]  # bob's label kept


def test_the_command_reads_csv_and_jsonl_and_exits_1_on_any_refusal(served: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": served[0], "label": "Sports"}) + "\n\n" + json.dumps({"id": "x:0", "label": "W"}))
    result = CliRunner().invoke(main, ["feedback", str(bad), "--source", "carol"])
    assert result.exit_code == 1, result.output
    assert "line 3: x:0 'W': REFUSED: unknown id: no trace x in the tracking store" in result.output
    assert "1 of 2 rows refused: nothing written" in result.output and "Traceback" not in result.output
    assert _expectations(served[0]) == {}

    trace_id = parse_prediction_id(served[0])[0]
    good = tmp_path / "good.csv"
    good.write_text(f"id,row,label\n{trace_id},1,World\n{served[2]},,Sci/Tech\n")  # a bare trace id with its row
    result = CliRunner().invoke(main, ["feedback", str(good), "--source", "carol"])
    assert result.exit_code == 0, result.output
    assert "2 true labels written" in result.output
    assert _expectations(served[1]) == {"true_label[1]": ("World", "HUMAN", "carol")}


def test_a_file_that_cannot_be_read_as_rows_is_refused_whole(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("prediction,truth\ntr-1:0,World\n")
    with pytest.raises(FeedbackFileError, match=r"the header needs columns id and label .*missing id, label"):
        read_feedback(tmp_path / "a.csv")
    (tmp_path / "b.jsonl").write_text('{"id": "tr-1:0", "label": "World"}\n{oops\n')
    with pytest.raises(FeedbackFileError, match="line 2 is not JSON"):
        read_feedback(tmp_path / "b.jsonl")


def _assessments(prediction_id: str) -> list[tuple[str, bool | None, str]]:
    trace = mlflow.MlflowClient().get_trace(parse_prediction_id(prediction_id)[0])
    return sorted((a.value, a.valid, a.source.source_id) for a in trace.info.assessments)


def test_the_same_labels_sent_again_are_a_no_op_not_a_refusal(served: list[str], tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(f"id,label\n{served[0]},Sports\n{served[2]},World\n{served[2]},World\n")  # a line twice
    first = CliRunner().invoke(main, ["feedback", str(labels), "--source", "desk"])
    assert first.exit_code == 0, first.output
    assert "line 4: " in first.output and "unchanged: repeats line 3" in first.output
    assert first.output.splitlines()[-1] == "2 true labels written, 1 unchanged (the same label was there)"

    again = CliRunner().invoke(main, ["feedback", str(labels), "--source", "desk"])  # the whole file sent again
    assert again.exit_code == 0, again.output
    assert f"line 2: {served[0]} 'Sports': unchanged: already labelled 'Sports' by desk" in again.output
    assert again.output.splitlines()[-1] == "0 true labels written, 3 unchanged (the same label was there)"
    assert _assessments(served[0]) == [("Sports", True, "desk")]  # nothing new on the trace: no second expectation

    changed = attach_feedback([{"id": served[0], "label": "World"}], source="desk")  # another label: the old rule
    assert changed.outcomes[0].refused == "already labelled 'Sports' by desk; use --replace to change it"


def test_unknown_ids_are_listed_and_skip_unknown_writes_the_rest(served: list[str], tmp_path: Path) -> None:
    trace_id = parse_prediction_id(served[2])[0]
    missing = ["tr-0000000000000000000000000000dead:0", f"{trace_id}:3"]  # no such trace; no such row
    labels = tmp_path / "labels.jsonl"
    rows = [
        {"id": missing[0], "label": "World"},
        {"id": served[0], "label": "Sports"},
        {"id": missing[1], "label": "W"},
    ]
    labels.write_text("\n".join(json.dumps(r) for r in rows))
    refused = CliRunner().invoke(main, ["feedback", str(labels)])
    assert refused.exit_code == 1
    assert f"2 unknown id(s): {missing[0]}, {missing[1]} (--skip-unknown writes" in refused.output
    assert _expectations(served[0]) == {}

    skipped = CliRunner().invoke(main, ["feedback", str(labels), "--skip-unknown", "--source", "desk"])
    assert skipped.exit_code == 0, skipped.output
    assert f"line 1: {missing[0]} 'World': skipped: unknown id: no trace" in skipped.output
    assert skipped.output.splitlines()[-1] == (
        f"1 true labels written, 2 skipped (unknown ids: {missing[0]}, {missing[1]})"
    )
    assert _expectations(served[0]) == {"true_label[0]": ("Sports", "HUMAN", "desk")}


def test_a_row_may_carry_its_text_checked_against_the_traced_sha256(served: list[str], tmp_path: Path) -> None:
    wrong = attach_feedback([{"id": served[0], "label": "Sports", "text": "not what was sent"}])
    assert wrong.outcomes[0].refused == (
        "the text is not the one that prediction answered (its SHA-256 differs from the trace's)"
    )
    attach_feedback([{"id": served[0], "label": "Sports"}], source="desk")  # the label first, without its text
    labels = tmp_path / "labels.csv"
    labels.write_text(f"id,label,text\n{served[0]},Sports,a\n{served[2]},World,\n")  # "a" was sent; no text
    added = CliRunner().invoke(main, ["feedback", str(labels), "--source", "desk"])
    assert added.exit_code == 0, added.output
    assert f"{served[0]} 'Sports': text added" in added.output
    trace = mlflow.MlflowClient().get_trace(parse_prediction_id(served[0])[0])
    valid = [a for a in trace.info.assessments if a.valid is not False]
    assert [(a.value, a.metadata.get("text")) for a in valid] == [("Sports", "a")]
    other = mlflow.MlflowClient().get_trace(parse_prediction_id(served[2])[0])
    assert [a.metadata.get("text") for a in other.info.assessments] == [None]  # an empty cell: no text
