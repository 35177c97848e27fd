"""The run lifecycle against a real (sqlite) MLflow store: study and trial runs, states, params, dead workers."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from newscat.config import Config
from newscat.processes import Worker
from newscat.tracking import interrupted, runs
from newscat.tracking.limits import PARAM_VALUE_LIMIT


def test_a_trial_run_nests_under_the_study_run_and_ends_with_optunas_state(tracking_uri: str) -> None:
    cfg = Config()
    parent_id = runs.create_study_run(cfg)
    with runs.start_study_run(parent_id):
        runs.claim_study_run()
        trial = runs.start_trial_run(3, "s", retry_of=1)
        runs.log_trial_params({"learning_rate": 1e-4, "seed": cfg.seed + 3})
        runs.end_trial_run("PRUNED")
        failed = runs.start_trial_run(4, "s")
        runs.end_trial_run("FAIL", "boom")
    client = MlflowClient()
    pruned, broken = client.get_run(trial.info.run_id), client.get_run(failed.info.run_id)
    assert pruned.data.tags["mlflow.parentRunId"] == parent_id and pruned.info.run_name == "trial-3"
    assert (pruned.info.status, pruned.data.tags["optuna.state"]) == ("KILLED", "PRUNED")
    assert pruned.data.tags["newscat.retry_of_trial"] == "1"
    assert pruned.data.params["seed"] == str(cfg.seed + 3) and pruned.data.params["learning_rate"] == "0.0001"
    assert (broken.info.status, broken.data.tags["newscat.fail_reason"]) == ("FAILED", "boom")
    assert client.get_run(parent_id).data.tags[runs.WORKER_TAG] == Worker.current().tag()


def test_params_logged_again_on_resume_keep_the_first_value_and_tag_the_change(tracking_uri: str) -> None:
    with mlflow.start_run() as run:
        runs.log_params_once({"a": 1, "b": "x", "long": "y" * 600})
        runs.log_params_once({"a": 2, "b": "x", "c": 3, "long": "y" * 600})
    data = MlflowClient().get_run(run.info.run_id).data
    assert data.params == {"a": "1", "b": "x", "c": "3", "long": "y" * PARAM_VALUE_LIMIT}
    assert data.tags["newscat.resumed_with.a"] == "2" and "newscat.resumed_with.b" not in data.tags


def test_runs_of_a_dead_process_end_failed_and_live_ones_stay(tracking_uri: str) -> None:
    dead = Worker("this-host", 999_999, 1.0)
    with mlflow.start_run() as study_run:
        client = MlflowClient()
        alive = runs.start_trial_run(0, "s")
        mlflow.end_run()  # leave it RUNNING in the store: end it there by hand afterwards
        client.update_run(alive.info.run_id, "RUNNING")
        left = client.create_run(study_run.info.experiment_id, tags={"newscat.study": "s"})
        client.set_tag(left.info.run_id, runs.WORKER_TAG, Worker(Worker.current().host, dead.pid, 1.0).tag())
        ended = interrupted.end_dead_workers_runs("s")
    assert ended == [left.info.run_id]
    closed = client.get_run(left.info.run_id)
    assert closed.info.status == "FAILED" and closed.data.tags["newscat.fail_reason"].startswith("interrupted:")
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    interrupted.end_interrupted_run(alive.info.run_id, "gone")
    assert client.get_run(alive.info.run_id).info.status == "FAILED"
    interrupted.end_interrupted_run("no-such-run", "gone")  # a deleted run: nothing to close, no error


def test_run_queries(tracking_uri: str) -> None:
    with mlflow.start_run() as run:
        mlflow.log_param("p", "v")
    assert runs.run_exists(run.info.run_id) and not runs.run_exists("nope")
    assert runs.run_finished(run.info.run_id) and not runs.run_finished("")
    assert runs.run_params(run.info.run_id) == {"p": "v"}


@pytest.mark.parametrize("experiment", ["newscat-evaluations", "newscat-promotions"])
def test_evaluation_runs_are_top_level_runs_of_their_own_experiment(tracking_uri: str, experiment: str) -> None:
    with runs.start_evaluation_run("models:/m/1", experiment=experiment) as run:
        assert mlflow.active_run().info.run_id == run.info.run_id
    found = MlflowClient().get_run(run.info.run_id)
    assert MlflowClient().get_experiment(found.info.experiment_id).name == experiment
    assert "mlflow.parentRunId" not in found.data.tags and found.data.tags["newscat.role"] == "evaluation"
