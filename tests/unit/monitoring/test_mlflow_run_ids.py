"""Under `mlflow run . -e monitor` the project's run id (MLFLOW_RUN_ID) must not swallow the monitor's own run:
MLflow's start_run resumes that run whatever experiment it is asked for, renamed, and the report would land in the
project's experiment."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from newscat.monitoring.live import LiveWindow, log_monitoring
from tests.unit.monitoring.traffic import LABELS


def test_the_monitor_logs_a_run_of_its_own_beside_the_project_run(
    champion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MlflowClient()
    project = client.create_run(client.create_experiment("project"), run_name="project-run")  # as `mlflow run` does
    monkeypatch.setenv("MLFLOW_RUN_ID", project.info.run_id)
    traces_experiment = mlflow.get_logged_model(champion).experiment_id
    window = LiveWindow(traces_experiment, champion, 0, 1000, 1, pd.DataFrame(), tuple(LABELS))
    features = pd.DataFrame({"chars": [10.0, 12.0]})
    run_id = log_monitoring(
        window, features, {"live_accuracy": 0.9}, run_name="monitor-1", tags={"x": "y"}, artifacts={"a.txt": "hi"}
    )
    own = client.get_run(run_id)
    assert run_id != project.info.run_id
    assert (own.info.experiment_id, own.info.run_name, own.data.tags["x"]) == (traces_experiment, "monitor-1", "y")
    assert own.data.metrics["live_accuracy"] == 0.9 and own.data.tags["newscat.project_run_id"] == project.info.run_id
    untouched = client.get_run(project.info.run_id)
    assert untouched.info.run_name == "project-run" and "live_accuracy" not in untouched.data.metrics
    assert untouched.data.tags["newscat.monitor_run_id"] == run_id  # the project's run points at the report
