"""The end of a study: the final LoggedModel (the refit's, or the best trial's) is scored on the test split, given
its model card and registered.

Each step does one thing; `release_best` runs them in order.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import optuna
from mlflow.entities.model_registry import ModelVersion

from newscat.config import Config
from newscat.errors import NewscatError
from newscat.evaluation.card import CardFacts, model_card
from newscat.evaluation.report import Predictions, per_class_table, predict_split, report_metrics
from newscat.export.package import ServingBuild, add_lexical, build_serving, path_probabilities, serving_table
from newscat.registry.tags import VersionTags
from newscat.registry.versions import find_version, register_version
from newscat.serving.choice import BACKEND_ENV, DEVICE_ENV, PRECISION_ENV
from newscat.serving.inputs import CHARS_PER_TOKEN_CAP
from newscat.serving.lexical import mix, prepare_texts
from newscat.tracking.evaluations import log_evaluation
from newscat.tracking.models import (
    STUDY_RUN_TAG,
    download_model,
    load_model,
    log_classifier_model,
    log_model_card,
    log_model_metrics,
    logged_params,
    weights_sha256,
)
from newscat.training.budget import Budget
from newscat.training.lexical import Companion, build_companion, companion_metrics, companion_table
from newscat.training.refit import FinalWeights, refit_best

if TYPE_CHECKING:
    from newscat.training.inputs import StudyInputs

log = logging.getLogger("newscat")
# Test rows sent as one request to the logged model to check it against its release build, and the largest difference
# in a class probability allowed. Both run the same batches, so only thread scheduling in float sums differs; the
# full split's scores cannot serve as the reference: int8 activations are quantized per batch, and a text's
# probabilities moved by up to 0.025 with other batch-mates (AMD EPYC).
CHECK_ROWS = 256
CHECK_TOLERANCE = 1e-4


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
)


@dataclass(frozen=True)
class Release:
    """The registered version, its test metrics, and the test predictions (None: registered by an earlier process)."""

    version: ModelVersion
    test_metrics: dict[str, float]
    predictions: Predictions | None


def release_best(
    inputs: StudyInputs,
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    parent_run_id: str,
    budget: Budget,
) -> Release:
    """Refit (or take the best trial's model), score it on the test split, write its card, register it."""
    cfg = inputs.cfg
    existing = find_version(cfg.registered_model, best.user_attrs["mlflow_run_id"])
    if existing is not None:
        log.info("best trial %d is already registered as version %s", best.number, existing.version)
        return Release(existing, dict(VersionTags.from_tags(existing.tags).test_metrics), None)
    final = refit_best(inputs, study, best, budget)
    model_id, build, companion, check = log_release_model(inputs, best, final, parent_run_id)
    lexical = _lexical_test_probabilities(inputs, companion)
    predictions = score_on_test(inputs, model_id, build, companion, lexical, check)
    metrics = report_metrics(predictions)
    log_evaluation(predictions, metrics, model_id=model_id)
    section = _companion_section(inputs, model_id, companion, build, lexical, metrics)
    card = write_card(inputs, study, best, final, predictions, metrics, build, section)
    log_model_card(model_id, card)
    tags = version_tags(inputs, study, best, final, parent_run_id, predictions, metrics)
    version = register_version(f"models:/{model_id}", cfg.registered_model, tags=tags, description=card)
    log.info("registered %s version %s with alias challenger", cfg.registered_model, version.version)
    return Release(version, metrics, predictions)


def log_release_model(
    inputs: StudyInputs, best: optuna.trial.FrozenTrial, final: FinalWeights, parent_run_id: str
) -> tuple[str, ServingBuild, Companion | None, np.ndarray]:
    """The final weights as the model to register (`release-trial-N`): ONNX graphs added, every serving path scored
    on the test split by the accuracy gate, the lexical companion mixed in where it wins on validation, the
    requirements of the default path. Returns its id, the build, the companion (None: not tried) and what the
    build answers to the first `CHECK_ROWS` test texts sent as one request (to check the logged model against)."""
    test = inputs.data.test
    with tempfile.TemporaryDirectory(prefix="newscat-release-") as tmp:
        source = download_model(f"models:/{final.model_id}", Path(tmp) / "source")
        model_dir = Path(shutil.copytree(source / "artifacts" / "classifier", Path(tmp) / "classifier"))
        build = build_serving(
            model_dir, test["text"].tolist(), test["label"].to_numpy(), inputs.cfg.model.serving_paths
        )
        companion = fit_companion(inputs, model_dir, final, build.decision.default)
        if companion is not None and companion.choice.kept:
            add_lexical(model_dir, companion.model)
        check = _served_probabilities(
            model_dir, build.decision.default, companion, test["text"].tolist()[:CHECK_ROWS], inputs.cfg
        )
        model_id = log_classifier_model(
            model_dir,
            name=f"release-trial-{best.number}",
            step=0,
            params=logged_params(final.model_id),
            tags={
                "newscat.study": inputs.cfg.tune.study_name,
                "newscat.trial": str(best.number),
                "newscat.role": "release",
                "newscat.source_model_id": final.model_id,  # the trial's or refit's LoggedModel with these weights
                STUDY_RUN_TAG: parent_run_id,
                **build.decision.tags(),
            },
            backend=build.decision.default.split("/")[0],
            run_id=final.run_id,  # the run that trained these weights: the registered version's run
        )
    log_model_metrics(model_id, build.decision.metrics(), inputs.records["test"])
    if companion is not None:
        log_model_metrics(model_id, companion.choice.metrics(), inputs.records["validation"])
    return model_id, build, companion, check


def _served_probabilities(
    model_dir: Path, path: str, companion: Companion | None, texts: list[str], cfg: Config
) -> np.ndarray:
    """What the model in `model_dir` answers to `texts` in one request on `path`: the same batches as served."""
    probabilities = path_probabilities(model_dir, path, texts)
    if companion is None or not companion.choice.kept:
        return probabilities
    lexical = companion.model.probabilities(prepare_texts(texts, cfg.model.max_length * CHARS_PER_TOKEN_CAP))
    return mix(probabilities, lexical, companion.model.weight)


def fit_companion(inputs: StudyInputs, model_dir: Path, final: FinalWeights, path: str) -> Companion | None:
    """The lexical companion, fitted on the final weights' training rows; its share chosen on validation against
    the encoder as served on `path` (None: `model.lexical` is off)."""
    cfg, data = inputs.cfg, inputs.data
    if cfg.model.lexical == "off":
        return None
    rows = data.refit_rows(cfg.train.refit_samples, seed=cfg.seed) if final.rows > len(data.train) else data.train
    texts = data.validation["text"].tolist()
    return build_companion(
        (rows["text"].tolist(), rows["label"].to_numpy()),
        (texts, data.validation["label"].to_numpy()),
        path_probabilities(model_dir, path, texts),
        max_chars=cfg.model.max_length * CHARS_PER_TOKEN_CAP,
        seed=cfg.seed,
    )


def _lexical_test_probabilities(inputs: StudyInputs, companion: Companion | None) -> np.ndarray | None:
    """The companion's class probabilities on the test texts (None: no companion)."""
    if companion is None:
        return None
    max_chars = inputs.cfg.model.max_length * CHARS_PER_TOKEN_CAP
    return companion.model.probabilities(prepare_texts(inputs.data.test["text"].tolist(), max_chars))


def _companion_section(
    inputs: StudyInputs,
    model_id: str,
    companion: Companion | None,
    build: ServingBuild,
    lexical: np.ndarray | None,
    served: dict[str, float],
) -> str:
    """The encoder alone and the companion alone on the test split (metrics of the release model, linked to the
    test set) and the card's table comparing them with the served model."""
    if companion is None or lexical is None:
        return ""
    labels = inputs.data.test["label"].to_numpy()
    scores = companion_metrics(labels, {"encoder": build.probabilities, "lexical": lexical}, inputs.data.label_names)
    log_model_metrics(model_id, scores, inputs.records["test"])
    return companion_table(companion, scores, served)


def score_on_test(
    inputs: StudyInputs,
    model_id: str,
    build: ServingBuild,
    companion: Companion | None,
    lexical: np.ndarray | None,
    check: np.ndarray,
) -> Predictions:
    """The released model's predictions on the test split: the gate's scores of its default path (the same code,
    engine and batches that serve it), mixed with the companion's as the served model mixes them.

    The first `CHECK_ROWS` texts are also sent as one request to the logged model, which checks its files' SHA-256
    at load: it must answer what the release build answered to that request (`check`), so a model cut short by a
    kill, or assembled wrongly, is never registered.
    """
    data = inputs.data
    probabilities = build.probabilities
    if companion is not None and lexical is not None and companion.choice.kept:
        probabilities = mix(probabilities, lexical, companion.model.weight)
    sample = data.test.iloc[:CHECK_ROWS]
    log.info("checking the logged model on %d of the %d test rows", len(sample), len(data.test))
    with _serving_path(build.decision.default):  # the path the build answered on, whatever NEWSCAT_* say here
        model = load_model(f"models:/{model_id}")
    served = predict_split(model, sample, data.label_names, inputs.records["test"])
    gap = float(np.abs(served.probabilities - check).max()) if len(sample) else 0.0
    if gap > CHECK_TOLERANCE:
        raise ReleaseError(
            f"the logged model {model_id} answers differently from its release build (class probabilities differ "
            f"by up to {gap:.2g} on {len(sample)} test rows): it is not registered"
        )
    return Predictions(
        texts=data.test["text"].tolist(),
        labels=data.test["label"].to_numpy(),
        predicted=probabilities.argmax(axis=1),
        probabilities=probabilities,
        label_names=tuple(data.label_names),
        data=dict(inputs.records["test"]),
    )


@contextmanager
def _serving_path(path: str) -> Iterator[None]:
    """Load-time switches that make a model loaded inside this block serve `path` (`backend/precision`) on the CPU,
    as the release build did: a user's NEWSCAT_BACKEND for serving, or a GPU, must not fail the release check."""
    backend, precision = path.split("/")
    wanted = {BACKEND_ENV: backend, PRECISION_ENV: precision, DEVICE_ENV: "cpu"}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
            serving=serving_table(build),
            lexical=lexical,
        )
    )


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
        test_digest=inputs.digests["test"],
        base_model=cfg.model.name,
        seed=cfg.seed,
        test_metrics=metrics,
        evaluations={predictions.data["digest"]: parent_run_id},
    )
