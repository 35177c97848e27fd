"""LoggedModels: every complete trial's and refit's best checkpoint as a servable pyfunc with the params that made it,
metrics linked to the dataset they were computed on, and the model card as its description.

Models are built with MLflow 3's LoggedModel calls (initialize, upload, finalize) rather than `pyfunc.log_model`,
which would copy the run's params and step metrics onto the model unlinked to any dataset. The model's files are
packaged by `newscat.export.pyfunc` (a clean classifier folder, saved as a pyfunc); this module logs them.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import LoggedModel, LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel, PythonModel
from mlflow.tracking import MlflowClient

from newscat.export.pyfunc import export_classifier, save_pyfunc
from newscat.export.reference import REFERENCE_DIR, REFERENCE_FILE
from newscat.names import ROLE_TAG, Role
from newscat.redaction import redact_values
from newscat.serving.artifacts import logged_weights_sha256
from newscat.serving.model import recorded_path_loads

log = logging.getLogger("newscat")
MODEL_TYPE = "news-topic-classifier"
WEIGHTS_TAG = "newscat.weights_sha256"  # the SHA-256 of model.safetensors inside the model
STUDY_RUN_TAG = "newscat.study_run_id"  # the study's parent run
SOURCE_MODEL_TAG = "newscat.source_model_id"  # on a release: the trial's or refit's LoggedModel with its weights
REFERENCE_TAG = "newscat.monitoring_reference"  # how many texts the training reference holds, and which
DESCRIPTION_TAG = "mlflow.note.content"  # what the MLflow UI shows as a model's description


def log_checkpoint_model(
    checkpoint: Path,
    *,
    name: str,
    step: int,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    max_length: int,
    base_model: str,
) -> str:
    """A READY LoggedModel of a Trainer checkpoint (served by torch), output of the active run at `step`; returns
    its id."""
    with tempfile.TemporaryDirectory(prefix="newscat-model-") as tmp:
        model_dir = export_classifier(
            checkpoint, Path(tmp) / "classifier", max_length=max_length, base_model=base_model
        )
        return log_classifier_model(model_dir, name=name, step=step, params=params, tags=tags)


def log_classifier_model(
    model_dir: Path,
    *,
    name: str,
    step: int,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    backend: str = "torch",
    run_id: str | None = None,
) -> str:
    """A READY LoggedModel of a classifier folder, output of run `run_id` (default: the active run) at `step`;
    returns its id.

    A failure on the way (a full disk, a refused upload) leaves the model FAILED, never PENDING.
    """
    run = MlflowClient().get_run(run_id) if run_id else mlflow.active_run()
    run_id = run.info.run_id
    # The study's run, so that the best model is looked for among this study's models only (a study name can be
    # reused in the same experiment after its storage was deleted).
    tags = {STUDY_RUN_TAG: run.data.tags.get("mlflow.parentRunId", run_id), **tags}
    model = mlflow.initialize_logged_model(
        name=name,
        source_run_id=run_id,
        params=redact_values({k: str(v) for k, v in params.items()}),  # a base model may be a URL with a password
        model_type=MODEL_TYPE,
        tags={**redact_values(tags), WEIGHTS_TAG: logged_weights_sha256(model_dir)},
    )
    try:
        with tempfile.TemporaryDirectory(prefix="newscat-pyfunc-") as tmp:
            client = MlflowClient()
            saved = save_pyfunc(model_dir, Path(tmp) / "model", backend, model_id=model.model_id)
            client.log_model_artifacts(model.model_id, str(saved))
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=step)])
    except BaseException as exc:
        mark_failed(model.model_id, exc)
        raise  # the original error, whatever marking the model did
    mlflow.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    return model.model_id


def mark_failed(model_id: str, cause: BaseException) -> None:
    """End a model whose upload, or the release's check of it, failed as FAILED. When that fails too (the store may
    be the cause: an outage), the failure is logged and the original error is the one raised; a later resume ends
    the model FAILED (`fail_pending_models`, and for a release `release_models`)."""
    try:
        mlflow.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
    except Exception as secondary:  # any: it must not replace `cause`
        log.error(
            "could not mark LoggedModel %s FAILED after %s: %s (a resume of the study ends it FAILED)",
            model_id,
            type(cause).__name__,
            secondary,
        )


def log_model_metrics(
    model_id: str, metrics: Mapping[str, float], record: Mapping[str, Any] | None, *, step: int = 0, prefix: str = ""
) -> None:
    """Metrics of `model_id`, linked to the dataset of `record` (split name and digest; None: to no dataset, for
    figures that are not one split's), in the active run."""
    dataset = None
    if record is not None:
        dataset = DatasetEntity(
            name=str(record["split"]), digest=str(record["digest"]), source_type="local", source=str(record["source"])
        )
    values = {f"{prefix}{k}": float(v) for k, v in metrics.items()}
    mlflow.log_metrics(values, step=step, model_id=model_id, dataset=dataset)


def fail_pending_models(run_id: str) -> list[str]:
    """End as FAILED the models a dead process left PENDING in `run_id`; returns their ids."""
    found = mlflow.search_logged_models(
        filter_string=f"source_run_id = '{run_id}'",
        experiment_ids=[MlflowClient().get_run(run_id).info.experiment_id],
        output_format="list",
    )
    # Status is filtered here: MLflow 3.17's sqlite store compares `status = 'PENDING'` with its integer column.
    pending = [model for model in found if model.status == LoggedModelStatus.PENDING]
    for model in pending:
        mlflow.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
    return [model.model_id for model in pending]


def release_models(study_run_id: str, source_model_id: str) -> list[LoggedModel]:
    """The release LoggedModels already logged in the study run `study_run_id` for the weights of
    `source_model_id`, oldest first, whatever their status (a resumed release reuses or fails them)."""
    found = mlflow.search_logged_models(
        experiment_ids=[MlflowClient().get_run(study_run_id).info.experiment_id],
        filter_string=f"tags.`{STUDY_RUN_TAG}` = '{study_run_id}' AND tags.`{ROLE_TAG}` = '{Role.RELEASE}' "
        f"AND tags.`{SOURCE_MODEL_TAG}` = '{source_model_id}'",
        order_by=[{"field_name": "creation_timestamp", "ascending": True}],
        output_format="list",
    )
    return list(found)


def best_model(experiment_id: str, study_run_id: str, metric: str) -> LoggedModel | None:
    """The READY trial model of the study run `study_run_id` with the highest `metric` on the validation set
    (the earliest on ties)."""
    found = mlflow.search_logged_models(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{STUDY_RUN_TAG}` = '{study_run_id}' AND tags.`{ROLE_TAG}` = '{Role.TRIAL}'",
        order_by=[
            {"field_name": f"metrics.{metric}", "ascending": False, "dataset_name": "validation"},
            {"field_name": "creation_timestamp", "ascending": True},
        ],
        output_format="list",
    )
    return next((model for model in found if model.status == LoggedModelStatus.READY), None)


def logged_params(model_id: str) -> dict[str, str]:
    """The params a LoggedModel was logged with."""
    return dict(mlflow.get_logged_model(model_id).params)


def weights_sha256(model_id: str) -> str:
    """The weights digest recorded on a LoggedModel when it was logged."""
    return mlflow.get_logged_model(model_id).tags.get(WEIGHTS_TAG, "")


def load_model(model_uri: str) -> PyFuncModel:
    """Load a logged or registered model as a pyfunc (any URI MLflow understands) to answer with (`newscat
    predict`): a newscat model honours the NEWSCAT_BACKEND / NEWSCAT_PRECISION / NEWSCAT_DEVICE overrides, and
    never traces (only `mlflow models serve` does).

    MLflow makes a loaded model the "active model" for later metrics; newscat always says which model a metric
    belongs to, so that is undone here.
    """
    model = mlflow.pyfunc.load_model(model_uri)
    mlflow.clear_active_model()
    return model


def load_recorded(model_uri: str) -> PyFuncModel:
    """Load a model to decide or record metrics with (evaluate, check, promote, the retrain gates, the release
    check): a newscat model scores on its recorded serving path whatever NEWSCAT_BACKEND / NEWSCAT_PRECISION /
    NEWSCAT_DEVICE say, so that two versions compare, and metrics land on a model, on the path it serves by.
    `scored_path` says which path it was."""
    with recorded_path_loads():
        model = load_model(model_uri)
    engine = _newscat_model(model)
    if engine is not None and not getattr(engine, "recorded_path", False) and engine.choice.reason.startswith("over"):
        # The loaded model ran serving code that the switch above does not reach (another copy of newscat).
        raise MlflowException(
            f"{model_uri} was loaded with NEWSCAT_* overrides read from the environment: its scores cannot be used "
            "to decide or record metrics; unset NEWSCAT_BACKEND, NEWSCAT_PRECISION and NEWSCAT_DEVICE"
        )
    return model


def scored_path(model: PyFuncModel) -> dict[str, str]:
    """Which engine a loaded model answers with, to record beside metrics made with it: `scored_path`
    (backend/precision), `scored_engine` (with the device and why); {} for a model that is not newscat's."""
    engine = _newscat_model(model)
    if engine is None:
        return {}
    choice = engine.choice
    return {"scored_path": choice.path, "scored_engine": f"{choice}: {choice.reason}"}


def _newscat_model(model: PyFuncModel) -> PythonModel | None:
    """The newscat classifier inside a loaded pyfunc; None for any other model."""
    try:
        python_model = model.unwrap_python_model()
    except MlflowException:  # not a PythonModel (another flavor's pyfunc)
        return None
    return python_model if hasattr(python_model, "choice") and hasattr(python_model, "scorer") else None


def log_model_card(model_id: str, card: str) -> None:
    """The model card: the LoggedModel's description, README.md inside it, and `model_card.md` in the active run."""
    with tempfile.TemporaryDirectory(prefix="newscat-card-") as tmp:
        path = Path(tmp) / "README.md"
        path.write_text(card, encoding="utf-8")
        MlflowClient().log_model_artifact(model_id, str(path))
    mlflow.set_logged_model_tags(model_id, {DESCRIPTION_TAG: card})
    mlflow.log_text(card, "model_card.md")


def log_reference(model_id: str, frame: pd.DataFrame, source: str) -> None:
    """The training reference beside the model's files (`monitoring/reference.parquet`), what it was built from as
    a LoggedModel tag."""
    with tempfile.TemporaryDirectory(prefix="newscat-reference-") as tmp:
        folder = Path(tmp) / REFERENCE_DIR
        folder.mkdir()
        frame.to_parquet(folder / REFERENCE_FILE, index=False)
        MlflowClient().log_model_artifacts(model_id, tmp)
    mlflow.set_logged_model_tags(model_id, {REFERENCE_TAG: f"{len(frame)} texts: {source}"})


def logged_tags(model_id: str) -> dict[str, str]:
    return dict(mlflow.get_logged_model(model_id).tags)


def logged_card(model_id: str) -> str | None:
    """The model card stored as a LoggedModel's description (`log_model_card`); None when it has none."""
    return mlflow.get_logged_model(model_id).tags.get(DESCRIPTION_TAG)


def download_model(model_uri: str, target: Path) -> Path:
    """A local copy of a logged model's files."""
    target.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(target)))
