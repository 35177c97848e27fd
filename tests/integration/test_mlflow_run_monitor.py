"""`mlflow run . -e monitor` as documented, on the tiny champion the shared `mlflow run` registered: the monitor logs
a run of its own in the model's experiment (the project's MLFLOW_RUN_ID does not swallow it) and the project's run
points at it."""

from __future__ import annotations

import subprocess

import pytest
from mlflow.tracking import MlflowClient

from newscat.registry.versions import version_model_id
from tests.helpers import MODEL_NAME, ROOT, tool_env
from tests.integration.conftest import TrackedStudy

pytestmark = pytest.mark.integration


def test_the_monitor_entry_point_logs_its_own_run(tracked_study: TrackedStudy, client: MlflowClient) -> None:
    command = [
        "mlflow",
        "run",
        str(ROOT),
        "-e",
        "monitor",
        "--env-manager",
        "local",
        "--experiment-name",
        "monitor-job",
    ]
    command += ["-P", f"model={MODEL_NAME}@champion", "-P", "since=1h"]
    result = subprocess.run(
        command,
        cwd=tracked_study.root,
        env=tool_env(tracked_study.tracking_uri),
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert "logged: run " in output, output[-4000:]  # no traffic: not judged (exit 3), but the run is logged
    job = client.get_experiment_by_name("monitor-job")
    (project,) = client.search_runs([job.experiment_id])  # the run `mlflow run` made: only the pointer in it
    assert project.data.tags["mlflow.project.entryPoint"] == "monitor"
    assert not project.data.metrics and "newscat.role" not in project.data.tags
    monitor_run = client.get_run(project.data.tags["newscat.monitor_run_id"])
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    model_experiment = client.get_logged_model(version_model_id(champion)).experiment_id
    assert monitor_run.info.experiment_id == model_experiment != job.experiment_id
    assert monitor_run.data.tags["newscat.role"] == "monitor"
    assert monitor_run.data.tags["newscat.project_run_id"] == project.info.run_id
