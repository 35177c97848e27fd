"""`mlflow run -P storage=<URL with a password>`: MLflow logs every -P value verbatim as a param of its run before the
job starts, so the job stops at once with an error naming NEWSCAT_STORAGE and the run, never printing the password."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from newscat.config import ConfigError, refuse_passwords_logged_by_mlflow_run
from tests.helpers import ROOT, tool_env

SECRET = "s3cret-pw"
URL = f"postgresql://optuna:{SECRET}@127.0.0.1:1/optuna"  # never connected to: the job stops before


def test_a_password_in_a_flag_under_mlflow_run_stops_the_job_naming_newscat_storage() -> None:
    with pytest.raises(ConfigError) as caught:
        refuse_passwords_logged_by_mlflow_run({"storage": URL, "n_trials": 3}, {"MLFLOW_RUN_ID": "r123"})
    message = str(caught.value)
    assert "-P storage holds a password" in message and "run r123" in message
    assert "NEWSCAT_STORAGE" in message and "mlflow gc --run-ids r123" in message
    assert SECRET not in message
    # Any flag that MLflow logged: a data URL's password is stored the same way (no NEWSCAT_STORAGE for it).
    with pytest.raises(ConfigError, match=r"-P data holds a password") as caught:
        refuse_passwords_logged_by_mlflow_run({"data": f"https://u:{SECRET}@host/news.csv"}, {"MLFLOW_RUN_ID": "r"})
    assert SECRET not in str(caught.value) and "NEWSCAT_STORAGE" not in str(caught.value)


def test_only_a_password_under_mlflow_run_is_refused() -> None:
    # Outside `mlflow run` nothing logged the flag: newscat masks the password in all it writes.
    refuse_passwords_logged_by_mlflow_run({"storage": URL}, {})
    # Under `mlflow run`, a URL without a password (PGPASSWORD, ~/.pgpass give it) is fine.
    refuse_passwords_logged_by_mlflow_run(
        {"storage": "postgresql://optuna@db:5432/optuna", "model": None}, {"MLFLOW_RUN_ID": "r1"}
    )


@pytest.mark.integration  # a real `mlflow run` (about a minute on a busy 2-core machine)
def test_mlflow_run_with_a_password_in_storage_stops_before_the_job_logs_anything(tmp_path: Path) -> None:
    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = ["mlflow", "run", str(ROOT), "--env-manager", "local", "--experiment-name", "leak"]
    command += ["-P", f"storage={URL}", "-P", "n_trials=1", "-P", "study_name=leak"]
    result = subprocess.run(
        command, cwd=tmp_path, env=tool_env(tracking_uri), capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    job_output = result.stderr.split("=== Running command", 1)[-1].split("\n", 1)[-1]  # after MLflow's own line
    assert "NEWSCAT_STORAGE" in job_output and "-P storage holds a password" in job_output
    assert SECRET not in job_output  # newscat printed no password (MLflow's own command line above did)
    client = MlflowClient(tracking_uri=tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("leak").experiment_id])
    assert run.info.run_id in job_output and run.info.status == "FAILED"
    # What the error says: MLflow stored the -P value itself, verbatim; newscat logged nothing of its own.
    assert SECRET in run.data.params["storage"]
    assert not [key for key in run.data.params if "." in key]  # no `tune.storage` etc.: the job never started
    assert not [key for key in run.data.tags if key.startswith("newscat.")]
