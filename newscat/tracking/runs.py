"""Run lifecycle: the store, the study's parent run, one nested run per trial or refit, their params and states."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from newscat.config import Config
from newscat.locks import beside_sqlite
from newscat.names import ROLE_TAG, STUDY_TAG, TRIAL_TAG, Role
from newscat.processes import Worker
from newscat.redaction import redact_url, redact_values
from newscat.tracking.limits import PARAM_VALUE_LIMIT, TAG_VALUE_LIMIT
from newscat.tracking.store import RESUME, is_missing, raise_failure

# Optuna's trial state -> the MLflow run status that tells the same story.
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


WORKER_TAG = "newscat.worker"  # host:pid:start time of the process that holds a RUNNING run
# MLflow 3's experiment kinds: the UI shows a model-training experiment's runs and models, not agent views.
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def prepare_store() -> None:
    """Reach the tracking store once, before any work: a server that refuses the credentials fails here. A sqlite
    database is created or upgraded under a file lock, since MLflow's schema migration is not safe against several
    workers starting at the same moment ("duplicate column name")."""
    with beside_sqlite(mlflow.get_tracking_uri()):
        for attempt in range(MIGRATION_ATTEMPTS):
            try:
                MlflowClient().search_experiments(max_results=1)
                return
            except MlflowException as exc:
                raise_failure(exc, "reaching the tracking store before any work", then=RESUME)
            except Exception as exc:  # sqlalchemy's OperationalError: a process outside newscat's lock (`mlflow run`
                # itself) migrated the same new sqlite file at the same moment; its schema is complete a moment later
                if attempt == MIGRATION_ATTEMPTS - 1 or not _migration_race(exc):
                    raise
                time.sleep(2.0)


MIGRATION_ATTEMPTS = 5


def _migration_race(exc: Exception) -> bool:
    """Whether a store error is another process creating the same sqlite schema concurrently."""
    text = str(exc)
    return type(exc).__name__ == "OperationalError" and any(
        words in text for words in ("already exists", "duplicate column", "database is locked")
    )


def create_study_run(cfg: Config) -> str:
    """A new parent run for a study: the one `mlflow run` made (MLFLOW_RUN_ID), else `study-<name>`."""
    if os.environ.get("MLFLOW_RUN_ID"):
        return os.environ["MLFLOW_RUN_ID"]
    mlflow.set_experiment(cfg.experiment)
    experiment_id = mlflow.get_experiment_by_name(cfg.experiment).experiment_id
    return MlflowClient().create_run(experiment_id, run_name=f"study-{cfg.tune.study_name}").info.run_id


def start_study_run(run_id: str) -> mlflow.ActiveRun:
    """Open the study's parent run in this process (every worker and resume logs under the same one)."""
    # `mlflow run`'s MLFLOW_RUN_ID has been read (create_study_run, link_worker_run); MLflow would otherwise resume
    # that run in the next start_run, i.e. the first trial's nested run.
    os.environ.pop("MLFLOW_RUN_ID", None)
    experiment_id = MlflowClient().get_run(run_id).info.experiment_id
    mark_model_training(experiment_id)
    mlflow.set_experiment(experiment_id=experiment_id)
    return mlflow.start_run(run_id=run_id)


def mark_model_training(experiment_id: str) -> None:
    """Mark an experiment as model training, so that MLflow 3's UI treats it as one (runs and models, not agents)."""
    client = MlflowClient()
    if client.get_experiment(experiment_id).tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)


LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` listens by default


def models_view(experiment_id: str) -> str:
    """The MLflow UI page of this experiment's models in the model-training view: MLflow 3.17 opens experiments in
    its GenAI view otherwise, whatever the experiment kind says (mlflow/mlflow#24498). A tracking server's own
    address (its password left out); for a local store, where `mlflow ui` serves it by default."""
    uri = mlflow.get_tracking_uri()
    base = redact_url(uri) if uri.startswith(("http://", "https://")) else LOCAL_UI
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/models?workflowType=machine_learning"


def link_worker_run(study_run_id: str) -> None:
    """Under `mlflow run`, a worker whose own run is not the study's run says where its trials went."""
    own = os.environ.get("MLFLOW_RUN_ID")
    if own and own != study_run_id:
        MlflowClient().set_tag(own, ROLE_TAG, Role.WORKER)
        MlflowClient().set_tag(own, "newscat.study_run_id", study_run_id)


def active_experiment_id() -> str:
    """The experiment of the active run."""
    return mlflow.active_run().info.experiment_id


def run_experiment_id(run_id: str) -> str:
    return MlflowClient().get_run(run_id).info.experiment_id


def run_exists(run_id: str) -> bool:
    """Whether `run_id` names a run that is not deleted. Only the store's "no such run" means no; an outage raises
    (read as "gone", it would start a second parent run for the study)."""
    run = find_run(run_id, "looking up the study's run")
    return run is not None and run.info.lifecycle_stage == "active"


def find_run(run_id: str, action: str) -> Run | None:
    """The run `run_id`, or None when the store says it does not exist; any other failure raises a TrackingError
    naming `action`."""
    try:
        return MlflowClient().get_run(run_id)
    except MlflowException as exc:
        if is_missing(exc):
            return None
        raise_failure(exc, f"{action} ({run_id})", then=RESUME)


def run_params(run_id: str) -> dict[str, str]:
    """The params logged to a run."""
    return dict(MlflowClient().get_run(run_id).data.params)


def run_finished(run_id: str) -> bool:
    """Whether `run_id` names an existing run that finished successfully."""
    if not run_id:
        return False
    run = find_run(run_id, "looking up a finished run")
    return run is not None and run.info.status == "FINISHED"


def log_params_once(params: Mapping[str, Any]) -> None:
    """Log params; on a resumed run keep the first values (MLflow forbids changing them) and tag changes."""
    logged = MlflowClient().get_run(mlflow.active_run().info.run_id).data.params
    short = {k: str(v)[:PARAM_VALUE_LIMIT] for k, v in params.items()}
    new = {k: v for k, v in short.items() if k not in logged}
    changed = {
        f"newscat.resumed_with.{k}": str(params[k])[:TAG_VALUE_LIMIT]
        for k, v in short.items()
        if k in logged and logged[k] != v
    }
    if new:
        mlflow.log_params(new)
    if changed:
        mlflow.set_tags(changed)


def start_trial_run(number: int, study_name: str, *, retry_of: int | None = None) -> mlflow.ActiveRun:
    """A nested run for one trial, named after its number, tagged with the process that runs it."""
    tags = {STUDY_TAG: study_name, TRIAL_TAG: str(number), ROLE_TAG: Role.TRIAL, **_worker_tag()}
    if retry_of is not None:
        tags["newscat.retry_of_trial"] = str(retry_of)
    return mlflow.start_run(run_name=f"trial-{number}", nested=True, tags=tags)


def _worker_tag() -> dict[str, str]:
    return {WORKER_TAG: Worker.current().tag()}


def claim_study_run() -> None:
    """Mark the active (parent) run as held by this process, so that a later resume can tell it was left behind."""
    mlflow.set_tags(_worker_tag())


def start_refit_run(trial_number: int, study_name: str) -> mlflow.ActiveRun:
    """A nested run that retrains the best trial's params on more rows; its checkpoint becomes the model."""
    return mlflow.start_run(
        run_name=f"refit-trial-{trial_number}",
        nested=True,
        tags={
            STUDY_TAG: study_name,
            TRIAL_TAG: str(trial_number),
            ROLE_TAG: Role.REFIT,
            **_worker_tag(),
        },
    )


def end_trial_run(state: str, reason: str | None = None) -> None:
    """Close the active trial run with the status matching Optuna's state."""
    tags = {"optuna.state": state}
    if reason:
        tags["newscat.fail_reason"] = reason[:TAG_VALUE_LIMIT]
    mlflow.set_tags(tags)
    mlflow.end_run(status=RUN_STATUS[state])


def set_tags(tags: Mapping[str, Any]) -> None:
    """Tags on the active run (values as strings)."""
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_metrics(metrics: Mapping[str, float], *, step: int | None = None, prefix: str = "") -> None:
    """Log numeric metrics to the active run."""
    mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in metrics.items()}, step=step)


def log_trial_params(params: Mapping[str, Any]) -> None:
    """A trial's or refit's params (its recipe, `newscat.training.recipe`), each value without a URL's password."""
    mlflow.log_params(redact_values({key: str(value) for key, value in params.items()}))


def start_evaluation_run(model_uri: str, experiment: str = "newscat-evaluations") -> mlflow.ActiveRun:
    """A top-level run for an on-demand evaluation or a promotion decision.

    Made by id, so that an MLFLOW_RUN_ID set by `mlflow run` for the study is not taken over.
    """
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    mark_model_training(experiment_id)
    run = client.create_run(experiment_id, run_name=f"evaluate {model_uri}"[:250], tags={ROLE_TAG: Role.EVALUATION})
    mlflow.set_experiment(experiment_id=experiment_id)  # fluent start_run checks the run against it
    return mlflow.start_run(run_id=run.info.run_id)


def start_nested_evaluation_run(model_uri: str) -> mlflow.ActiveRun:
    """A nested run, under the active evaluation run, for the evaluation of another model (the defending champion)."""
    return mlflow.start_run(run_name=f"evaluate {model_uri}"[:250], nested=True, tags={ROLE_TAG: Role.EVALUATION})
