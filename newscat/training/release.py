"""The end of a study: log the final model as a pyfunc, score it on the test split, write its card, register it.

Each step does one thing; `release_best` runs them in order.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from mlflow.entities.model_registry import ModelVersion

from newscat.evaluation.card import CardFacts, model_card
from newscat.evaluation.report import Predictions, per_class_table, predict_split, report_metrics
from newscat.registry.tags import VersionTags
from newscat.registry.versions import find_version, register_version
from newscat.serving.artifacts import export_classifier, logged_weights_sha256
from newscat.tracking.datasets import dataset_record
from newscat.tracking.evaluations import log_evaluation
from newscat.tracking.models import download_checkpoint, load_model, log_model_card, log_pyfunc
from newscat.tracking.runs import run_params
from newscat.training.budget import Budget
from newscat.training.refit import refit_best

if TYPE_CHECKING:
    from newscat.training.inputs import StudyInputs

log = logging.getLogger("newscat")
# The params of the weights' run that the model card shows (a refit under a budget may run fewer epochs).
CARD_PARAMS = (
    "learning_rate",
    "batch_size",
    "epochs",
    "warmup_ratio",
    "weight_decay",
    "precision",
    "freeze_embeddings",
)


@dataclass(frozen=True)
class Release:
    """The registered version, its test metrics, and the test predictions (None: registered by an earlier process)."""

    version: ModelVersion
    test_metrics: dict[str, float]
    predictions: Predictions | None


@dataclass(frozen=True)
class FinalModel:
    """The logged pyfunc of the final weights and where they came from."""

    info: Any  # MLflow's ModelInfo
    weights_run_id: str
    weights_sha256: str
    train_rows: int


def release_best(
    inputs: StudyInputs,
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    parent_run_id: str,
    digests: dict[str, str],
    budget: Budget,
) -> Release:
    """Refit (or take the best trial's checkpoint), log it as a pyfunc, score the test split, register it."""
    cfg = inputs.cfg
    existing = find_version(cfg.registered_model, best.user_attrs["mlflow_run_id"])
    if existing is not None:
        log.info("best trial %d is already registered as version %s", best.number, existing.version)
        return Release(existing, dict(VersionTags.from_tags(existing.tags).test_metrics), None)
    weights_run_id, train_rows = refit_best(inputs, study, best, budget)
    final = log_final_model(inputs, weights_run_id, train_rows)
    predictions = score_on_test(inputs, final)
    metrics = report_metrics(predictions)
    log_evaluation(predictions, metrics)
    card = write_card(inputs, study, best, final, digests, predictions, metrics)
    log_model_card(final.info.model_id, card)
    tags = version_tags(inputs, study, best, final, parent_run_id, digests, predictions, metrics)
    version = register_version(final.info.model_uri, cfg.registered_model, tags=tags, description=card)
    log.info("registered %s version %s with alias challenger", cfg.registered_model, version.version)
    return Release(version, metrics, predictions)


def log_final_model(inputs: StudyInputs, weights_run_id: str, train_rows: int) -> FinalModel:
    """Export the checkpoint logged by `weights_run_id` into a clean model folder and log it as a pyfunc."""
    cfg = inputs.cfg
    with tempfile.TemporaryDirectory(prefix="newscat-best-") as tmp:
        checkpoint = download_checkpoint(weights_run_id, Path(tmp) / "download")
        model_dir = export_classifier(
            checkpoint, Path(tmp) / "classifier", max_length=cfg.model.max_length, base_model=cfg.model.name
        )
        info = log_pyfunc(model_dir)
        return FinalModel(info, weights_run_id, logged_weights_sha256(model_dir), train_rows)


def score_on_test(inputs: StudyInputs, final: FinalModel) -> Predictions:
    """Score the test split through the logged copy, as it will be served.

    Loading it checks its weights' SHA-256, so a model cut short by a kill is never registered.
    """
    data = inputs.data
    log.info("scoring the final model (%d training rows) on %d test rows", final.train_rows, len(data.test))
    record = dataset_record(data.test, inputs.cfg.data.source, "test")
    return predict_split(load_model(final.info.model_uri), data.test, data.label_names, record)


def write_card(
    inputs: StudyInputs,
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    final: FinalModel,
    digests: dict[str, str],
    predictions: Predictions,
    metrics: dict[str, float],
) -> str:
    """The model card (markdown) of the final model."""
    cfg, data = inputs.cfg, inputs.data
    logged = run_params(final.weights_run_id)
    rows = {"trials' train": len(data.train), "final train": final.train_rows, "validation": len(data.validation)}
    return model_card(
        CardFacts(
            registered_model=cfg.registered_model,
            base_model=cfg.model.name,
            data_source=cfg.data.source,
            label_names=data.label_names,
            split_rows={**rows, "test": len(data.test)},
            digests=digests,
            params={k: logged[k] for k in CARD_PARAMS if k in logged},
            study=study.study_name,
            trial=best.number,
            metrics=metrics,
            per_class=per_class_table(predictions, metrics),
            max_length=cfg.model.max_length,
        )
    )


def version_tags(
    inputs: StudyInputs,
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    final: FinalModel,
    parent_run_id: str,
    digests: dict[str, str],
    predictions: Predictions,
    metrics: dict[str, float],
) -> VersionTags:
    """Where the new version came from: study, trial, runs, weights digest, data and test scores."""
    cfg = inputs.cfg
    return VersionTags(
        study=study.study_name,
        trial=best.number,
        parent_run_id=parent_run_id,
        trial_run_id=best.user_attrs["mlflow_run_id"],
        weights_run_id=final.weights_run_id,
        weights_sha256=final.weights_sha256,
        train_rows=final.train_rows,
        data_source=cfg.data.source,
        text_columns=cfg.data.text_columns,
        label_column=cfg.data.label_column,
        train_digest=digests["train"],
        test_digest=digests["test"],
        base_model=cfg.model.name,
        seed=cfg.seed,
        test_metrics=metrics,
        evaluations={predictions.data["digest"]: parent_run_id},
    )
