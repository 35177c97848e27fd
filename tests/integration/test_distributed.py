"""Two tuning workers on one study through PostgreSQL: one parent run, no trial collisions, n_trials respected,
the model registered once."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from newscat.processes import Worker
from newscat.training.recovery import WORKER_ATTR
from tests.helpers import ROOT, tiny_project

pytestmark = pytest.mark.integration
N_TRIALS = 4


def test_two_workers_share_one_study_one_parent_run_and_one_registration(
    tmp_path: Path, postgres_database: Callable[[], str]
) -> None:
    storage = postgres_database()
    space = "learning_rate: {low: 1.0e-4, high: 5.0e-4, log: true}\nbatch_size: 8\n"
    project = tiny_project(tmp_path, n_train=10, n_test=2, space=space)
    # 36 training rows: the trials see them all, so there is no refit.
    params = {
        "data": project.data,
        "n_trials": N_TRIALS,
        "max_epochs": 2,
        "max_length": 24,
        "max_eval_samples": 0,
        "pruner": "none",
        "study_name": "shared",
        "storage": storage,
        "registered_model": "newscat-dist",
        "search_space": project.space,
        "config": project.config,
        "serving_paths": "none",  # the shared study is the subject, not the release's serving paths
        "lexical": "off",
    }
    # One worker as `mlflow run` (which makes a run of its own), one as a plain `newscat tune`.
    under_mlflow_run = ["mlflow", "run", str(ROOT), "--env-manager", "local", "--experiment-name", "distributed"]
    under_mlflow_run += [part for key, value in params.items() for part in ("-P", f"{key}={value}")]
    plain = ["newscat", "tune", "--experiment", "distributed"]
    plain += [part for key, value in params.items() for part in (f"--{key.replace('_', '-')}", str(value))]
    env = project.env()
    workers = [
        subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for cmd in (under_mlflow_run, plain)
    ]
    outputs = [worker.communicate(timeout=900)[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-4000:]

    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(N_TRIALS))  # numbers never collide, none extra
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert len({Worker.parse(t.user_attrs[WORKER_ATTR]).pid for t in trials}) == 2  # both workers ran trials

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    parents = {client.get_run(t.user_attrs["mlflow_run_id"]).data.tags["mlflow.parentRunId"] for t in trials}
    assert parents == {parent_id}  # one parent run, whichever worker created it
    experiment = client.get_experiment_by_name("distributed").experiment_id
    project_run = client.search_runs([experiment], filter_string="tags.`mlflow.project.entryPoint` = 'main'")[0]
    if project_run.info.run_id != parent_id:  # `mlflow run` came second: its run points at the study's run
        assert project_run.data.tags["newscat.role"] == "worker"
        assert project_run.data.tags["newscat.study_run_id"] == parent_id
    else:  # `mlflow run` came first: its run is the study's run
        assert project_run.data.tags["newscat.role"] == "study"
    (version,) = client.search_model_versions("name='newscat-dist'")  # registered once
    assert version.tags["parent_run_id"] == parent_id
    assert version.tags["trial"] == str(study.best_trial.number)
    # One LoggedModel per complete trial, whichever worker ran it, and no duplicates.
    found = client.search_logged_models(experiment_ids=[experiment])
    models = {m.name: m for m in found}
    complete = [t.number for t in trials if t.state == TrialState.COMPLETE]
    release = f"release-trial-{version.tags['trial']}"  # the registered build of the best trial's weights, once
    assert sorted(m.name for m in found) == sorted([release, *(f"trial-{n}" for n in complete)])
    assert version.source == f"models:/{models[release].model_id}"
    assert models[release].tags["newscat.source_model_id"] == models["trial-" + version.tags["trial"]].model_id
    registered = [output for output in outputs if "registered newscat-dist version 1" in output]
    assert len(registered) == 1
    other = outputs[1 - outputs.index(registered[0])]
    assert "still run in other workers" in other or "is already registered" in other
