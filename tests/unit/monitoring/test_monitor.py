"""The monitor on real traces in a temporary sqlite store: a registered model with a training reference, requests
traced by the serving tracer, true labels fed back; Evidently measures the drift. Traffic like the reference is
healthy; traffic of one class with longer texts is prediction and input drift; wrong answers on labelled rows fail
the live-accuracy floor. The run it logs is linked to the served LoggedModel and to the live window."""

from __future__ import annotations

import time

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner

from newscat.cli import main
from newscat.config import ConfigError, MonitorConfig, window_seconds
from newscat.export.reference import FEATURES
from newscat.monitoring.feedback import attach_feedback
from newscat.monitoring.monitor import MonitorError, live_accuracy, monitor, wilson
from newscat.monitoring.verdict import Verdict
from newscat.serving.coverage import Coverage
from newscat.serving.tracing import Tracer, TraceSettings
from newscat.tracking.models import REFERENCE_TAG
from tests.unit.monitoring.traffic import EXPERIMENT, LABELS, NAME, serve, start_tracer, traffic

CFG = MonitorConfig(experiment=EXPERIMENT, since="1h", min_texts=100, min_labelled=30)


@pytest.fixture
def tracer(champion: str) -> Tracer:
    return start_tracer(TraceSettings(experiment=EXPERIMENT, model_uri=f"models:/{NAME}@champion"))


def test_traffic_like_the_reference_is_healthy_and_logged_on_the_served_model(tracer: Tracer, champion: str) -> None:
    texts, probabilities = traffic(np.random.default_rng(1), 200, [0.25] * 4, 30)
    ids = serve(tracer, texts, probabilities)
    predicted = [LABELS[i] for i in probabilities.argmax(axis=1)]
    assert not attach_feedback([{"id": i, "label": p} for i, p in zip(ids[:40], predicted, strict=False)]).refused
    assert tracer.close(60)  # the writer's final coverage record, as when the server stops

    report = monitor(f"{NAME}@champion", CFG)
    assert report.healthy and not report.problems and not report.notes, report.text()
    assert report.verdict is Verdict.HEALTHY and report.coverage == Coverage(served=20, traced=20)
    assert "coverage: 20 requests served, 20 traced, 0 lost" in report.text()
    assert (len(report.window.answers), report.window.traces, report.version) == (200, 20, "1")
    assert [f.feature for f in report.drift.features] == list(FEATURES) and report.drift.share < 0.5
    assert (
        report.accuracy.labelled == 40
        and report.accuracy.accuracy == 1.0
        and report.accuracy.high == pytest.approx(1.0)
    )
    assert report.accuracy.expected == pytest.approx(probabilities.max(axis=1)[40:].mean(), abs=1e-5)
    assert "1200 texts: 1200 synthetic validation rows" in report.text() and report.text().endswith(
        f"logged: run {report.run_id} in experiment '{EXPERIMENT}'"
    )

    run = mlflow.get_run(report.run_id)
    assert run.data.metrics["live_texts"] == 200 and run.data.metrics["healthy"] == 1.0
    assert run.data.metrics["coverage"] == 1.0 and run.data.metrics["exit_code"] == 0.0
    assert run.data.tags["newscat.verdict"] == "healthy"
    assert run.data.tags["newscat.monitored"] == "news@champion"
    (live,) = run.inputs.dataset_inputs
    assert live.dataset.source.startswith("mlflow-traces:") and f"model_id={champion}" in live.dataset.source
    assert [m.model_id for m in run.inputs.model_inputs] == [champion]
    linked = {m.key: m for m in mlflow.get_logged_model(champion).metrics}
    assert linked["drift_label"].dataset_digest == live.dataset.digest  # metrics linked to the live window
    artifacts = {f.path for f in mlflow.MlflowClient().list_artifacts(report.run_id, "monitor")}
    assert artifacts == {"monitor/summary.txt", "monitor/metrics.json", "monitor/drift_report.html"}


def test_one_class_of_longer_texts_is_drift_and_wrong_answers_fail_the_accuracy_floor(tracer: Tracer) -> None:
    texts, probabilities = traffic(np.random.default_rng(2), 200, [0.85, 0.05, 0.05, 0.05], 60)
    ids = serve(tracer, texts, probabilities)
    predicted = probabilities.argmax(axis=1)
    wrong = [LABELS[(p + 1) % 4] if row % 2 else LABELS[p] for row, p in enumerate(predicted[:60])]  # half wrong
    assert not attach_feedback([{"id": i, "label": w} for i, w in zip(ids, wrong, strict=False)]).refused

    report = monitor(f"{NAME}@champion", CFG)
    assert not report.healthy
    assert report.drift.feature("label").drifted and report.drift.feature("tokens").drifted
    assert any(p.startswith("prediction drift:") for p in report.problems)
    assert report.accuracy.accuracy == 0.5 and report.accuracy.high < 0.85
    assert any("below 0.8500 (test accuracy 0.9000 - monitor.max_accuracy_drop 0.05)" in p for p in report.problems)

    result = CliRunner().invoke(main, ["monitor", f"{NAME}@champion", "--since", "1h", "--experiment", EXPERIMENT])
    assert result.exit_code == 1, result.output
    assert "UNHEALTHY: prediction drift" in result.output and "live accuracy 0.5000" in result.output


def test_too_few_texts_are_not_judged_never_healthy_and_say_so(tracer: Tracer) -> None:
    texts, probabilities = traffic(np.random.default_rng(3), 20, [0.85, 0.05, 0.05, 0.05], 60)
    serve(tracer, texts, probabilities)
    report = monitor(f"{NAME}@champion", CFG)
    assert not report.healthy and report.verdict is Verdict.NOT_JUDGED and report.drift is None
    assert report.notes[:2] == (
        "drift not judged: 20 live texts < monitor.min_texts 100",
        "live accuracy not judged: 0 labelled texts < monitor.min_labelled 30",
    )
    assert report.text().splitlines()[-2] == (
        "NOT JUDGED: too little evidence for a verdict (drift: 20 live texts < monitor.min_texts 100); exit 3"
    )
    result = CliRunner().invoke(main, ["monitor", f"{NAME}@champion", "--since", "1h", "--experiment", EXPERIMENT])
    assert result.exit_code == 3, result.output


def test_what_cannot_be_monitored_is_refused_with_what_to_do(champion: str) -> None:
    with pytest.raises(MonitorError, match="no experiment 'served-news': serve with NEWSCAT_TRACING=on"):
        monitor(f"{NAME}@champion", CFG)
    with pytest.raises(MonitorError, match="takes NAME@ALIAS or NAME/VERSION"):
        monitor("news", CFG)
    other = mlflow.initialize_logged_model(name="old-release")
    version = mlflow.register_model(f"models:/{other.model_id}", NAME)
    mlflow.set_experiment(EXPERIMENT)
    with pytest.raises(MonitorError, match="has no training reference: it was released before"):
        monitor(f"{NAME}/{version.version}", CFG)
    assert mlflow.get_logged_model(champion).tags[REFERENCE_TAG] == "1200 texts: 1200 synthetic validation rows"


def test_accuracy_interval_and_window_parsing() -> None:
    low, high = wilson(45, 50)
    assert (round(low, 4), round(high, 4)) == (0.7864, 0.9565)  # the textbook Wilson interval
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)
    assert [window_seconds(w) for w in ("30m", "12h", "7d")] == [1800, 43200, 604800]
    for bad in ("7", "d", "0d", "1w", "-1d"):
        with pytest.raises(ConfigError, match="a window is a whole number followed by m, h or d"):
            window_seconds(bad)
    import pandas as pd

    assert live_accuracy(pd.DataFrame(), tuple(LABELS)).labelled == 0


def test_prune_traces_deletes_only_traces_older_than_the_window(tracer: Tracer) -> None:
    texts, probabilities = traffic(np.random.default_rng(4), 3, [0.25] * 4, 10)
    old = time.time_ns() - 3 * 86400 * 10**9  # answered three days ago
    for start_ns in (old, old, time.time_ns()):
        assert tracer.record(texts, probabilities, np.zeros(3, bool), start_ns=start_ns) is not None
    assert tracer.wait_idle(60)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
    result = CliRunner().invoke(main, ["prune-traces", "--older-than", "2d", "--experiment", EXPERIMENT])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"deleted 2 traces of experiment '{EXPERIMENT}' older than 2d"
    assert len(mlflow.search_traces(locations=[experiment], return_type="list")) == 1


def test_by_default_the_traces_go_to_the_served_models_own_experiment(
    champion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the MLflow UI lists a LoggedModel's traces (its Traces tab reads the model's own experiment only), and
    where monitor and prune-traces look unless told otherwise."""
    settings = TraceSettings.from_env({"NEWSCAT_TRACING": "on", "NEWSCAT_TRACE_MODEL_URI": f"models:/{NAME}@champion"})
    assert settings.experiment is None
    lines: list[str] = []
    tracer = start_tracer(settings, lines.append)
    own = mlflow.get_logged_model(champion).experiment_id
    assert tracer.experiment_id == own and f"(id {own}), model {champion}" in lines[0]
    texts, probabilities = traffic(np.random.default_rng(6), 120, [0.25] * 4, 30)
    serve(tracer, texts, probabilities)
    report = monitor(f"{NAME}@champion", MonitorConfig(since="1h", min_texts=100))
    assert report.window.experiment_id == own and len(report.window.answers) == 120
    result = CliRunner().invoke(main, ["prune-traces", f"{NAME}@champion", "--older-than", "1d"])
    name = mlflow.MlflowClient().get_experiment(own).name
    assert result.exit_code == 0 and result.output.strip() == f"deleted 0 traces of experiment '{name}' older than 1d"
    refused = CliRunner().invoke(main, ["prune-traces", "--older-than", "1d"])
    assert refused.exit_code != 0 and "name the model (NAME@ALIAS) whose experiment holds the traces" in refused.output
