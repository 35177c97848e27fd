"""The release's MLflow side: the release model logged (or an earlier process's reused) and checked, its reference,
metrics and card logged, the version registered; and the resume of a registration an earlier process cut short.

The order: `build_release` gates the serving paths and fits the companion; `score_test` scores the test split once
through the build; `release_model` logs the folder and `checked_release` loads it back as a user would, a model that
fails ending FAILED; then the card, the tags and the registration. The refit itself is started by the job
(`training/job.py`), not here.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion

from newscat.evaluation.report import Predictions, report_metrics
from newscat.export.package import ServingBuild
from newscat.names import ROLE_TAG, STUDY_TAG, TRIAL_TAG, Role
from newscat.registry.tags import VersionTags
from newscat.registry.versions import find_version, finish_registration, register_version, version_model_id
from newscat.release.build import Built, build_release, training_reference
from newscat.release.context import ReleaseContext
from newscat.release.describe import companion_scores, companion_section, gate_metrics, version_tags, write_card
from newscat.release.verify import TestScores, checked_release, reuse_release, score_test
from newscat.tracking.evaluations import log_evaluation
from newscat.tracking.models import (
    SOURCE_MODEL_TAG,
    STUDY_RUN_TAG,
    download_model,
    log_classifier_model,
    log_model_card,
    log_model_metrics,
    log_reference,
    logged_card,
    logged_params,
    release_models,
    weights_sha256,
)

log = logging.getLogger("newscat")


@dataclass(frozen=True)
class Release:
    """The registered version, its test metrics, and the test predictions (None: registered by an earlier process)."""

    version: ModelVersion
    test_metrics: dict[str, float]
    predictions: Predictions | None


def resume_release(*, registered_model: str, trial_run_id: str) -> Release | None:
    """The release an earlier process of this study registered for the best trial (its run `trial_run_id`),
    completed where it was cut short; None when there is none (the job then refits and releases)."""
    existing = find_version(registered_model, trial_run_id)
    if existing is None:
        return None
    log.info("the best trial (run %s) is already registered as version %s", trial_run_id, existing.version)
    model_id = version_model_id(existing)  # the release LoggedModel: its description is the model card
    card = logged_card(model_id) if model_id else None
    if card is None:
        log.warning("version %s has no model card on its LoggedModel: its description is left", existing.version)
    existing = finish_registration(existing, description=card, alias="challenger")
    return Release(existing, dict(VersionTags.from_tags(existing.tags).test_metrics), None)


def release_best(ctx: ReleaseContext) -> Release:
    """Build, score on the test split, log, check, describe and register the final weights."""
    with tempfile.TemporaryDirectory(prefix="newscat-release-") as tmp:
        source = download_model(f"models:/{ctx.final.model_id}", Path(tmp) / "source")
        model_dir = Path(shutil.copytree(source / "artifacts" / "classifier", Path(tmp) / "classifier"))
        built = build_release(ctx, model_dir)
        test = score_test(ctx, built)
        reference = training_reference(ctx, built)
        model_id = release_model(ctx, built.build, test.predictions)
    log_reference(model_id, reference.frame, reference.source)
    metrics, section = _log_scores(ctx, model_id, built, test)
    card = write_card(ctx, test.predictions, metrics, built.build, section)
    log_model_card(model_id, card)
    tags = version_tags(ctx, test.predictions, metrics, weights_sha256(ctx.final.model_id))
    version = register_version(f"models:/{model_id}", ctx.cfg.registered_model, tags=tags, description=card)
    return Release(version, metrics, test.predictions)


def _log_scores(ctx: ReleaseContext, model_id: str, built: Built, test: TestScores) -> tuple[dict[str, float], str]:
    """Log the gate's, the companion's and the test split's figures on the release model; returns the test metrics
    and the card's companion section."""
    validation, unlinked = gate_metrics(built.build.decision)
    log_model_metrics(model_id, validation, ctx.records["validation"])
    log_model_metrics(model_id, unlinked, None)
    if built.companion is not None:
        log_model_metrics(model_id, built.companion.choice.metrics(), ctx.records["validation"])
    metrics = report_metrics(test.predictions)
    log_evaluation(test.predictions, metrics, model_id=model_id)
    scores = companion_scores(ctx, built.companion, test)
    if scores:
        log_model_metrics(model_id, scores, ctx.records["test"])
    return metrics, companion_section(built.companion, scores, metrics)


def release_model(ctx: ReleaseContext, build: ServingBuild, reference: Predictions) -> str:
    """The checked release LoggedModel of `build`: one an earlier process of this study logged for the same weights
    and left unregistered (killed between logging and registering), reused when it is READY, on the build's serving
    decision and answers as the build does; else a new one (`log_release_model`). Every other release of these
    weights in this study ends FAILED, so never two READY ones stand for one registration."""
    kept = reuse_release(release_models(ctx.parent_run_id, ctx.final.model_id), build.decision.tags(), reference)
    if kept is not None:
        return kept
    return checked_release(log_release_model(ctx, build), reference)


def log_release_model(ctx: ReleaseContext, build: ServingBuild) -> str:
    """Log the build's folder as the model to register (`release-trial-N`), with the requirements of its default
    path; returns its id."""
    return log_classifier_model(
        build.model_dir,
        name=f"release-trial-{ctx.trial}",
        step=0,
        params=logged_params(ctx.final.model_id),
        tags={
            STUDY_TAG: ctx.cfg.tune.study_name,
            TRIAL_TAG: str(ctx.trial),
            ROLE_TAG: Role.RELEASE,
            SOURCE_MODEL_TAG: ctx.final.model_id,  # the trial's or refit's LoggedModel with these weights
            STUDY_RUN_TAG: ctx.parent_run_id,
            **build.decision.tags(),
        },
        backend=build.decision.default.split("/")[0],
        run_id=ctx.final.run_id,  # the run that trained these weights: the registered version's run
    )
