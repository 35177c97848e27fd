"""Runs left RUNNING by a process that died end FAILED, with the reason as a tag."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient

from newscat.processes import Worker, describe
from newscat.tracking.limits import TAG_VALUE_LIMIT
from newscat.tracking.models import fail_pending_models
from newscat.tracking.runs import WORKER_TAG, find_run


def end_interrupted_run(run_id: str, reason: str) -> None:
    """End a run left RUNNING by a process that died: FAILED, with the reason as a tag; a model it was uploading
    (still PENDING) ends FAILED too."""
    run = find_run(run_id, "closing the run of an interrupted trial")
    if run is None or run.info.lifecycle_stage != "active" or run.info.status != "RUNNING":
        return  # gone or deleted (nothing left to close), or closed already
    client = MlflowClient()
    client.set_tag(run_id, "newscat.fail_reason", reason[:TAG_VALUE_LIMIT])
    client.set_terminated(run_id, status="FAILED")
    fail_pending_models(run_id)


def end_dead_workers_runs(study_name: str) -> list[str]:
    """FAIL the study's runs (trials, refit, earlier parent runs) still RUNNING for a process on this host that is
    gone. Runs in the active run's experiment are checked; returns the run ids ended."""
    experiment_id = mlflow.active_run().info.experiment_id
    running = MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`newscat.study` = '{study_name}' and attributes.status = 'RUNNING'",
        max_results=1000,
    )
    ended = []
    for run in running:
        tag = run.data.tags.get(WORKER_TAG, "")
        worker = Worker.parse(tag)
        if worker is not None and worker.is_gone():
            end_interrupted_run(run.info.run_id, f"interrupted: {describe(tag)} stopped")
            ended.append(run.info.run_id)
    return ended
