"""The end of a study: the final weights (the refit's, or the best trial's) become the model to register.

The seams, in order: `build_release` exports and gates the serving paths and fits the lexical companion, every choice
made on validation or unlabelled texts; `score_test` scores the test split once, through the `ServingBuild` that
answers exactly as the served model will; `release_model` logs the folder (or reuses the unregistered release an
earlier process logged for these weights) and `check_logged_model` loads it back as a user would (no overrides) and
compares, a model that fails ending FAILED; then the card, the tags and the registration. The refit itself is
started by the job (`training/job.py`), not here.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import pandas as pd
from mlflow.entities import LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion

from newscat.errors import NewscatError
from newscat.evaluation.card import CardFacts, model_card
from newscat.evaluation.report import Predictions, per_class_table, predict_split, report_metrics
from newscat.export.gate import AGREEMENT_TEXTS, GateDecision, GateTexts
from newscat.export.package import ServingBuild, add_lexical, gate_serving_paths, serving_table
from newscat.export.reference import features_of_answers
from newscat.names import ROLE_TAG, STUDY_TAG, TRIAL_TAG, Role
from newscat.registry.tags import VersionTags
from newscat.registry.versions import find_version, finish_registration, register_version, version_model_id
from newscat.serving.inputs import CHARS_PER_TOKEN_CAP
from newscat.serving.lexical import prepare_texts
from newscat.tracking.evaluations import log_evaluation
from newscat.tracking.models import (
    SOURCE_MODEL_TAG,
    STUDY_RUN_TAG,
    download_model,
    load_recorded,
    log_classifier_model,
    log_model_card,
    log_model_metrics,
    log_reference,
    logged_card,
    logged_params,
    mark_failed,
    release_models,
    weights_sha256,
)
from newscat.training.lexical import Companion, build_companion, companion_metrics, companion_table
from newscat.training.refit import FinalWeights

if TYPE_CHECKING:
    from newscat.training.inputs import StudyInputs

log = logging.getLogger("newscat")
# Test rows sent as one request to the logged model to check it against its release build, and the largest difference
# in a class probability allowed. A text's answer does not depend on its batch-mates (`newscat.serving.model`), so the
# build's scores of the whole split are the reference; only float rounding in differently shaped batches differs.
CHECK_ROWS = 256
CHECK_TOLERANCE = 1e-5


class ReleaseError(NewscatError):
    """The logged release model does not reproduce its release build."""


# The params of the final model that its card shows (a refit under a budget may run fewer epochs than its trial).
CARD_PARAMS = (
    "learning_rate",
    "batch_size",
    "epochs",
    "warmup_ratio",
    "weight_decay",
    "precision",
    "freeze_embeddings",
    "frozen_layers",
    "dropout",
    "pooling",
    "layer_lr_decay",
)


@dataclass(frozen=True)
class Release:
    """The registered version, its test metrics, and the test predictions (None: registered by an earlier process)."""

    version: ModelVersion
    test_metrics: dict[str, float]
    predictions: Predictions | None


@dataclass(frozen=True)
class TestScores:
    """The test split scored once, through the served model's code: its predictions and the parts of the mix."""

    predictions: Predictions
    encoder: np.ndarray
    lexical: np.ndarray | None  # the companion's alone (None: no companion was fitted)


def resume_release(inputs: StudyInputs, best: optuna.trial.FrozenTrial) -> Release | None:
    """The release an earlier process of this study registered for `best`, completed where it was cut short; None
    when there is none (the job then refits and releases)."""
    cfg = inputs.cfg
    existing = find_version(cfg.registered_model, best.user_attrs["mlflow_run_id"])
    if existing is not None:
        log.info("best trial %d is already registered as version %s", best.number, existing.version)
        model_id = version_model_id(existing)  # the release LoggedModel: its description is the model card
        card = logged_card(model_id) if model_id else None
        if card is None:
            log.warning("version %s has no model card on its LoggedModel: its description is left", existing.version)
        existing = finish_registration(existing, description=card, alias="challenger")
        return Release(existing, dict(VersionTags.from_tags(existing.tags).test_metrics), None)
    return None


def release_best(
    inputs: StudyInputs,
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    final: FinalWeights,
    parent_run_id: str,
) -> Release:
    """Build, score on the test split, log, check, describe and register the final weights."""
    cfg = inputs.cfg
    with tempfile.TemporaryDirectory(prefix="newscat-release-") as tmp:
        source = download_model(f"models:/{final.model_id}", Path(tmp) / "source")
        model_dir = Path(shutil.copytree(source / "artifacts" / "classifier", Path(tmp) / "classifier"))
        build, companion = build_release(inputs, model_dir, final)
        test = score_test(inputs, build, companion)
        reference = training_reference(inputs, final, build)
        model_id = release_model(inputs, best, final, parent_run_id, build, test.predictions)
    log_reference(model_id, reference.frame, reference.source)
    validation, unlinked = gate_metrics(build.decision)
    log_model_metrics(model_id, validation, inputs.records["validation"])
    log_model_metrics(model_id, unlinked, None)
    if companion is not None:
        log_model_metrics(model_id, companion.choice.metrics(), inputs.records["validation"])
    metrics = report_metrics(test.predictions)
    log_evaluation(test.predictions, metrics, model_id=model_id)
    section = _companion_section(inputs, model_id, companion, test, metrics)
    card = write_card(inputs, study, best, final, test.predictions, metrics, build, section)
    log_model_card(model_id, card)
    tags = version_tags(inputs, study, best, final, parent_run_id, test.predictions, metrics)
    version = register_version(f"models:/{model_id}", cfg.registered_model, tags=tags, description=card)
    return Release(version, metrics, test.predictions)


def build_release(inputs: StudyInputs, model_dir: Path, final: FinalWeights) -> tuple[ServingBuild, Companion | None]:
    """ONNX graphs and the serving-path gate (validation accuracy, agreement on validation and unlabelled training
    texts), then the companion fitted on the final rows with its share chosen on validation against the default
    path; returns the build that answers as the served model will."""
    gated = gate_serving_paths(model_dir, gate_texts(inputs, final), inputs.cfg.model.serving_paths)
    companion = fit_companion(inputs, final, gated.validation)
    if companion is not None and companion.choice.kept:
        add_lexical(model_dir, companion.model)
    return ServingBuild.load(model_dir, gated), companion


def final_rows(inputs: StudyInputs, final: FinalWeights) -> pd.DataFrame:
    """The training rows the final weights were trained on (the refit's, or the trials')."""
    cfg, data = inputs.cfg, inputs.data
    return data.refit_rows(cfg.train.refit_samples, seed=cfg.seed) if final.rows > len(data.train) else data.train


def gate_texts(inputs: StudyInputs, final: FinalWeights) -> GateTexts:
    """The gate's texts: the validation rows, and up to `AGREEMENT_TEXTS` training texts for label agreement, those
    the final encoder did not see where any are left (else any training texts: agreement needs no unseen ones)."""
    data = inputs.data
    pool = data.train if data.train_pool is None else data.train_pool
    seen = final_rows(inputs, final)
    unseen = pool[~pool["text"].isin(set(seen["text"]))]
    source, rows = ("training texts the final encoder did not see", unseen) if len(unseen) else ("training texts", seen)
    if len(rows) > AGREEMENT_TEXTS:
        rows = rows.sample(AGREEMENT_TEXTS, random_state=inputs.cfg.seed)
    return GateTexts(
        texts=data.validation["text"].tolist(),
        labels=data.validation["label"].to_numpy(),
        unlabeled=rows["text"].tolist(),
        unlabeled_source=source,
    )


@dataclass(frozen=True)
class Reference:
    """The training reference monitoring compares live traffic with, and which texts it was built from."""

    frame: pd.DataFrame
    source: str


def training_reference(inputs: StudyInputs, final: FinalWeights, build: ServingBuild) -> Reference:
    """Features of texts from the training distribution the final encoder did not train on (the validation rows,
    plus the gate's training texts where it did not see them), answered as the served model answers them: their
    confidence is what the model shows on new news of the kind it learned, not on news it memorised. Their labels are
    known here, so it records whether each answer was right: what the label-free accuracy estimate is calibrated on."""
    gate = gate_texts(inputs, final)
    unseen = gate.unlabeled_source.endswith("did not see")
    texts = gate.texts + (gate.unlabeled if unseen else [])
    pool = inputs.data.train if inputs.data.train_pool is None else inputs.data.train_pool
    label_of = dict(zip(pool["text"], pool["label"], strict=True))
    labels = [int(v) for v in gate.labels] + ([int(label_of.get(t, -1)) for t in gate.unlabeled] if unseen else [])
    source = f"{len(gate.texts)} validation rows" + (f" and {len(gate.unlabeled)} {gate.unlabeled_source}" * unseen)
    log.info("training reference for monitoring: %s, answered on %s", source, build.scorer.choice)
    scores = build.scores(texts)
    scorer = build.scorer
    counts = scorer.encoder.counts(texts, max_chars=scorer.max_length * CHARS_PER_TOKEN_CAP)
    frame = features_of_answers(texts, scores.probabilities, scores.truncated, counts, scorer.label_names, labels)
    return Reference(frame, source)


def fit_companion(inputs: StudyInputs, final: FinalWeights, encoder_validation: np.ndarray) -> Companion | None:
    """The lexical companion, fitted on the final weights' training rows; its share chosen on validation against
    the encoder as served on the gate's default path (None: `model.lexical` is off)."""
    cfg, data = inputs.cfg, inputs.data
    if cfg.model.lexical == "off":
        return None
    rows = final_rows(inputs, final)
    return build_companion(
        (rows["text"].tolist(), rows["label"].to_numpy()),
        (data.validation["text"].tolist(), data.validation["label"].to_numpy()),
        encoder_validation,
        max_chars=cfg.model.max_length * CHARS_PER_TOKEN_CAP,
        seed=cfg.seed,
    )


def score_test(inputs: StudyInputs, build: ServingBuild, companion: Companion | None) -> TestScores:
    """The test split, scored once on the finally chosen served model (nothing is chosen from it): the served
    probabilities, and the encoder's and companion's alone for the card."""
    test = inputs.data.test
    texts = test["text"].tolist()
    log.info("scoring the %d test rows on the served model (%s)", len(texts), build.scorer.choice)
    scores = build.scores(texts)
    lexical = scores.lexical
    if lexical is None and companion is not None:  # fitted but not served: still measured, for the card
        max_chars = inputs.cfg.model.max_length * CHARS_PER_TOKEN_CAP
        lexical = companion.model.probabilities(prepare_texts(texts, max_chars))
    predictions = Predictions(
        texts=texts,
        labels=test["label"].to_numpy(),
        predicted=scores.probabilities.argmax(axis=1),
        probabilities=scores.probabilities,
        label_names=tuple(inputs.data.label_names),
        data=dict(inputs.records["test"]),
    )
    return TestScores(predictions, scores.encoder, lexical)


# The gate's agreement counts validation and training texts together: its metric says so and is linked to no split.
AGREEMENT_METRIC_SUFFIX = "_agreement_validation_and_training_texts"


def gate_metrics(decision: GateDecision) -> tuple[dict[str, float], dict[str, float]]:
    """The gate's figures per path, named for what they count: validation accuracy (`*_accuracy`, to be linked to
    the validation set), and, linked to no split, agreement with torch fp32 over the validation and training texts
    together (`*_agreement_validation_and_training_texts`) and the speeds measured on this machine."""
    validation: dict[str, float] = {}
    unlinked: dict[str, float] = {}
    for key, value in decision.metrics().items():
        if key.endswith("_accuracy"):
            validation[key] = value
        elif key.endswith("_agreement"):
            unlinked[key.removesuffix("_agreement") + AGREEMENT_METRIC_SUFFIX] = value
        else:
            unlinked[key] = value
    return validation, unlinked


def release_model(
    inputs: StudyInputs,
    best: optuna.trial.FrozenTrial,
    final: FinalWeights,
    parent_run_id: str,
    build: ServingBuild,
    reference: Predictions,
) -> str:
    """The checked release LoggedModel of `build`: one an earlier process of this study logged for the same weights
    and left unregistered (killed between logging and registering), reused when it is READY, on the build's serving
    decision and answers as the build does; else a new one (`log_release_model`). Every other release of these
    weights in this study ends FAILED, so never two READY ones stand for one registration."""
    kept = reuse_release(release_models(parent_run_id, final.model_id), build.decision.tags(), reference)
    if kept is not None:
        return kept
    return checked_release(log_release_model(inputs, best, final, parent_run_id, build), reference)


def reuse_release(orphans: list[Any], decision: Mapping[str, str], reference: Predictions) -> str | None:
    """The id of the first READY orphan release whose serving decision is `decision` and that passes the release
    check against `reference` (None: none does); every other orphan is marked FAILED."""
    kept = None
    for orphan in orphans:
        if kept is None and orphan.status == LoggedModelStatus.READY and _same_decision(orphan.tags, decision):
            try:
                check_logged_model(orphan.model_id, reference)
            except Exception as exc:  # any: a copy cut short fails to load, a changed one to answer alike
                log.warning("release model %s left by an earlier process fails the check: %s", orphan.model_id, exc)
            else:
                log.info("reusing release model %s, logged by an earlier process of this study", orphan.model_id)
                kept = orphan.model_id
                continue
        if orphan.status != LoggedModelStatus.FAILED:
            log.info("release model %s (%s) of an earlier process: marked FAILED", orphan.model_id, orphan.status)
            mark_failed(orphan.model_id, ReleaseError(f"superseded by the resumed release of {orphan.name}"))
    return kept


def _same_decision(tags: Mapping[str, str], decision: Mapping[str, str]) -> bool:
    return all(tags.get(key) == value for key, value in decision.items())


def checked_release(model_id: str, reference: Predictions) -> str:
    """`model_id` once it passes `check_logged_model`; a model that fails it ends FAILED, not READY, and the
    error is raised."""
    try:
        check_logged_model(model_id, reference)
    except BaseException as exc:  # a kill during the check too: the model was never shown to answer right
        mark_failed(model_id, exc)
        raise
    return model_id


def log_release_model(
    inputs: StudyInputs, best: optuna.trial.FrozenTrial, final: FinalWeights, parent_run_id: str, build: ServingBuild
) -> str:
    """Log the build's folder as the model to register (`release-trial-N`), with the requirements of its default
    path; returns its id."""
    return log_classifier_model(
        build.model_dir,
        name=f"release-trial-{best.number}",
        step=0,
        params=logged_params(final.model_id),
        tags={
            STUDY_TAG: inputs.cfg.tune.study_name,
            TRIAL_TAG: str(best.number),
            ROLE_TAG: Role.RELEASE,
            SOURCE_MODEL_TAG: final.model_id,  # the trial's or refit's LoggedModel with these weights
            STUDY_RUN_TAG: parent_run_id,
            **build.decision.tags(),
        },
        backend=build.decision.default.split("/")[0],
        run_id=final.run_id,  # the run that trained these weights: the registered version's run
    )


def check_logged_model(model_id: str, reference: Predictions) -> None:
    """Load the logged model as a user would (no NEWSCAT_* override, so on its recorded default path; its files'
    SHA-256 checked) and send it the first `CHECK_ROWS` test texts as one request: it must answer what the build
    answered, so a model cut short by a kill, or assembled wrongly, is never registered."""
    rows = min(CHECK_ROWS, len(reference.texts))
    log.info("checking the logged model on %d of the %d test rows", rows, len(reference.texts))
    model = load_recorded(f"models:/{model_id}")  # the recorded default, whatever NEWSCAT_* overrides say
    frame = pd.DataFrame({"text": reference.texts[:rows], "label": reference.labels[:rows]})
    served = predict_split(model, frame, reference.label_names, reference.data)
    gap = float(np.abs(served.probabilities - reference.probabilities[:rows]).max()) if rows else 0.0
    if gap > CHECK_TOLERANCE:
        raise ReleaseError(
            f"the logged model {model_id} answers differently from its release build (class probabilities differ "
            f"by up to {gap:.2g} on {rows} test rows): it is not registered"
        )


def _companion_section(
    inputs: StudyInputs, model_id: str, companion: Companion | None, test: TestScores, served: dict[str, float]
) -> str:
    """The encoder alone and the companion alone on the test split (metrics of the release model, linked to the
    test set) and the card's table comparing them with the served model."""
    if companion is None or test.lexical is None:
        return ""
    labels = test.predictions.labels
    parts = {"encoder": test.encoder, "lexical": test.lexical}
    scores = companion_metrics(labels, parts, inputs.data.label_names)
    log_model_metrics(model_id, scores, inputs.records["test"])
    return companion_table(companion, scores, served)


def write_card(
    inputs: StudyInputs,
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    final: FinalWeights,
    predictions: Predictions,
    metrics: dict[str, float],
    build: ServingBuild,
    lexical: str = "",
) -> str:
    """The model card (markdown) of the final model."""
    cfg, data = inputs.cfg, inputs.data
    logged = logged_params(final.model_id)
    rows = {"trials' train": len(data.train), "final train": final.rows, "validation": len(data.validation)}
    return model_card(
        CardFacts(
            registered_model=cfg.registered_model,
            base_model=cfg.model.name,
            data_source=cfg.data.source,
            label_names=data.label_names,
            split_rows={**rows, "test": len(data.test)},
            digests=inputs.digests,
            params={k: logged[k] for k in CARD_PARAMS if k in logged},
            study=study.study_name,
            trial=best.number,
            metrics=metrics,
            per_class=per_class_table(predictions, metrics),
            max_length=cfg.model.max_length,
            serving=serving_table(build.decision, build.gated.onnx_error),
            lexical=lexical,
            served=served_as(build),
        )
    )


def served_as(build: ServingBuild) -> str:
    """What the served model is, for the card: the encoder on its default path, mixed with the lexical companion
    where it won its share on validation (the test scores are this mix's, not the encoder's alone)."""
    encoder = f"the encoder on {build.decision.default}"
    lexical = build.scorer.lexical
    if lexical is None:
        return encoder
    return f"{1 - lexical.weight:.2f} x {encoder} + {lexical.weight:.2f} x the lexical companion"


def version_tags(
    inputs: StudyInputs,
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    final: FinalWeights,
    parent_run_id: str,
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
        weights_run_id=final.run_id,
        weights_sha256=weights_sha256(final.model_id),
        train_rows=final.rows,
        data_source=cfg.data.source,
        text_columns=cfg.data.text_columns,
        label_column=cfg.data.label_column,
        train_digest=inputs.digests["train"],
        # Everything that cuts the test split, and its digests: later commands recompute it and compare.
        test_fraction=inputs.data.test_fraction,  # None where the data has a test split of its own: nothing to cut
        test_digest=inputs.digests["test"],
        test_sha256=inputs.records["test"]["sha256"],
        test_rows=inputs.records["test"]["rows"],
        base_model=cfg.model.name,
        seed=cfg.seed,
        test_metrics=metrics,
        evaluations={predictions.data["digest"]: parent_run_id},
    )
