"""Faults injected for real: kill -9 mid-trial and resume, trials that fail, two studies at once into one store."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from newscat.tracking.models import load_model
from tests.helpers import CLASSES, TinyProject, tiny_project

pytestmark = pytest.mark.integration
optuna.logging.set_verbosity(optuna.logging.ERROR)


def _flags(study: str, n_trials: int, model: str = "newscat-faults") -> dict[str, object]:
    """Up to 2 epochs, no refit, one study per name into the `faults` experiment; torch only and no lexical companion
    (the release's ONNX export costs 10-odd seconds a job and is not what these tests are about)."""
    return {
        "n_trials": n_trials,
        "serving_paths": "none",
        "lexical": "off",
        "max_epochs": 2,
        "no_refit": True,
        "study_name": study,
        "experiment": "faults",
        "registered_model": model,
    }


def _client(project: TinyProject) -> MlflowClient:
    return MlflowClient(tracking_uri=project.tracking_uri)


def _running_runs(client: MlflowClient) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")


def _predicts(project: TinyProject, model: str, version: str) -> None:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(project.tracking_uri)  # explicit: an earlier test may have set another store
    try:
        answer = load_model(f"models:/{model}/{version}").predict(pd.DataFrame({"text": ["Lakers win the final"]}))
    finally:
        mlflow.set_tracking_uri(previous)
    assert answer["label"][0] in CLASSES


def test_kill_9_mid_trial_then_rerun_fails_that_trial_and_finishes_the_study(tmp_path: Path) -> None:
    # 60 rows per class, batch 8, 2 epochs: each trial trains for several seconds, long enough to be killed in even
    # on a fast CPU (with 30 per class a trial once finished inside the wait below).
    space = "learning_rate: {low: 1.0e-4, high: 5.0e-4, log: true}\nbatch_size: 8\nepochs: 2\n"
    project = tiny_project(tmp_path, space=space, n_train=60)
    command = project.tune_args(**_flags("killed", n_trials=3))
    storage = project.storage
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(command, cwd=tmp_path, env=project.env(), stdout=log, stderr=log)
        victim = None
        deadline = time.monotonic() + 400
        while victim is None and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.5)
            try:
                trials = optuna.load_study(study_name="killed", storage=storage).trials
            except KeyError:  # the study is not created yet
                continue
            running = [t for t in trials if t.number == 1 and t.state == TrialState.RUNNING]
            if running and "mlflow_run_id" in running[0].user_attrs:
                time.sleep(1)  # into its training
                victim = running[0]
        assert victim is not None, (tmp_path / "first.log").read_text()[-3000:]
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)

    client = _client(project)
    before = optuna.load_study(study_name="killed", storage=storage).trials
    assert [t.state for t in before[:2]] == [TrialState.COMPLETE, TrialState.RUNNING]  # what kill -9 leaves
    assert client.get_run(victim.user_attrs["mlflow_run_id"]).info.status == "RUNNING"

    second = subprocess.run(command, cwd=tmp_path, env=project.env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-4000:]
    after = optuna.load_study(study_name="killed", storage=storage).trials
    assert after[0].state == TrialState.COMPLETE and after[0].datetime_start == before[0].datetime_start  # kept
    assert after[1].state == TrialState.FAIL
    assert after[1].user_attrs["fail_reason"].startswith(f"interrupted: process {first.pid} on ")
    killed_run = client.get_run(victim.user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "FAILED"
    assert killed_run.data.tags["newscat.fail_reason"].startswith(f"interrupted: process {first.pid}")
    retried = [t for t in after if t.system_attrs.get("failed_trial") == 1]
    assert len(retried) == 1 and retried[0].params == victim.params  # the killed trial's params, run again
    retry_run = client.get_run(retried[0].user_attrs["mlflow_run_id"])
    assert retry_run.data.tags["newscat.retry_of_trial"] == "1"
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in after) == 3
    assert "trial 1 process" in second.stderr and "retry of interrupted trial 1" in second.stderr
    assert _running_runs(client) == []  # nothing left RUNNING, the old parent run included
    (version,) = client.search_model_versions("name='newscat-faults'")
    _predicts(project, "newscat-faults", version.version)


def test_failing_trials_are_recorded_with_their_reason_and_the_study_goes_on(tmp_path: Path) -> None:
    space = """\
learning_rate: {low: 1.0e-4, high: 5.0e-4, log: true}
batch_size: {low: 4, high: 8}
epochs: 1
enqueue:
  - {learning_rate: 1.0e+12, batch_size: 8}  # diverges: the loss becomes NaN
  - {learning_rate: 1.0e-4, batch_size: 0}  # a bad configuration
  - {learning_rate: 3.0e-4, batch_size: 8}
"""
    project = tiny_project(tmp_path, space=space)
    result = project.tune(**_flags("failing", n_trials=1))
    assert result.returncode == 0, result.stderr[-4000:]
    trials = optuna.load_study(study_name="failing", storage=project.storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    reasons = [t.user_attrs.get("fail_reason", "") for t in trials]
    assert reasons[0].startswith("training loss became nan") and "lower the learning rate" in reasons[0]
    assert reasons[1] == "bad trial parameters: batch_size must be >= 1, got 0"
    client = _client(project)
    runs = [client.get_run(t.user_attrs["mlflow_run_id"]) for t in trials]
    assert [r.info.status for r in runs] == ["FAILED", "FAILED", "FINISHED"]
    assert runs[1].data.tags["newscat.fail_reason"].startswith(reasons[1])
    assert "trial 0 FAILED: training loss became nan" in result.stderr
    (version,) = client.search_model_versions("name='newscat-faults'")
    assert version.tags["trial"] == "2"


def test_too_many_failures_stop_the_study_with_the_reasons(tmp_path: Path) -> None:
    space, limit = "learning_rate: 1.0e+12\nbatch_size: 8\nepochs: 1\n", "tune:\n  max_failed_trials: 2\n"
    project = tiny_project(tmp_path, space=space, extra_config=limit)
    result = project.tune(**_flags("hopeless", n_trials=3))
    assert result.returncode != 0
    assert "2 trials failed in this process (tune.max_failed_trials); stopping the study" in result.stderr
    assert "has no complete trial" in result.stderr
    trials = optuna.load_study(study_name="hopeless", storage=project.storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]


def test_two_studies_at_once_into_one_store_register_distinct_versions(tmp_path: Path) -> None:
    project = tiny_project(tmp_path, space="learning_rate: 3.0e-4\nbatch_size: 8\nepochs: 1\n")
    env = project.env()
    processes = {
        name: subprocess.Popen(
            project.tune_args(**_flags(name, n_trials=2, model="newscat-shared")),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("alpha", "beta")
    }
    outputs = {name: process.communicate(timeout=600)[0] for name, process in processes.items()}
    for name, process in processes.items():
        assert process.returncode == 0, outputs[name][-4000:]
    client = _client(project)
    versions = client.search_model_versions("name='newscat-shared'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert sorted(v.tags["study"] for v in versions) == ["alpha", "beta"]
    for version in versions:  # each version points at its own study's runs and model
        parent = client.get_run(version.tags["parent_run_id"])
        assert parent.data.tags["newscat.study"] == version.tags["study"] and parent.info.status == "FINISHED"
        trial_run = client.get_run(version.tags["trial_run_id"])
        assert trial_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        _predicts(project, "newscat-shared", version.version)
    assert len({v.source for v in versions}) == 2
    assert _running_runs(client) == []
