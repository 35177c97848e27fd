"""The release LoggedModel: one that fails its own check ends FAILED, never READY; a resumed release reuses the
unregistered release an earlier process logged for the same weights when it still answers as the build does, and
ends every other one FAILED, so that one READY release stands for the weights (real sqlite store)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import LoggedModelStatus

from newscat.evaluation.report import Predictions, predict_split
from newscat.release.verify import ReleaseError, checked_release, reuse_release
from newscat.tracking.models import (
    SOURCE_MODEL_TAG,
    STUDY_RUN_TAG,
    load_model,
    log_classifier_model,
    release_models,
)
from tests.helpers import fresh_classifier

TEXTS = ["Stocks rally as oil prices fall", "Striker scores twice in cup final win", "New chip doubles battery life"]
DECISION = {"newscat.serving.default": "torch/fp32", "newscat.serving.passed": "torch/fp32"}
SOURCE = "m-source-weights"


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_classifier(tmp_path_factory.mktemp("model") / "classifier", max_length=32)


@pytest.fixture
def study_run(tracking_uri: str) -> str:
    """A study's parent run, with the weights' run nested in it (active while the test logs)."""
    parent = mlflow.start_run(run_name="study")
    mlflow.start_run(run_name="refit", nested=True)
    return parent.info.run_id


def _log_release(classifier: Path, study_run: str, decision: dict[str, str] = DECISION) -> str:
    tags = {STUDY_RUN_TAG: study_run, "newscat.role": "release", SOURCE_MODEL_TAG: SOURCE, **decision}
    return log_classifier_model(classifier, name="release-trial-0", step=0, params={}, tags=tags)


def _answers(model_id: str) -> Predictions:
    """What the logged model answers on TEXTS: the reference a build that matches it would hold."""
    model = load_model(f"models:/{model_id}")
    names = tuple(model.predict(pd.DataFrame({"text": TEXTS[:1]}))["probabilities"][0])
    frame = pd.DataFrame({"text": TEXTS, "label": [0, 1, 2]})
    return predict_split(model, frame, names, {"split": "test", "digest": "d"})


def _other_answers(reference: Predictions) -> Predictions:
    """A build that answers differently (its classes' probabilities rotated)."""
    rotated = np.roll(reference.probabilities, 1, axis=1)
    return dataclasses.replace(reference, probabilities=rotated, predicted=rotated.argmax(axis=1))


def _status(model_id: str) -> LoggedModelStatus:
    return mlflow.get_logged_model(model_id).status


def test_a_release_that_fails_its_own_check_ends_failed(classifier: Path, study_run: str) -> None:
    model_id = _log_release(classifier, study_run)
    reference = _answers(model_id)
    assert checked_release(model_id, reference) == model_id and _status(model_id) == LoggedModelStatus.READY
    with pytest.raises(ReleaseError, match="answers differently from its release build"):
        checked_release(model_id, _other_answers(reference))
    assert _status(model_id) == LoggedModelStatus.FAILED


def test_a_resume_reuses_the_orphan_release_that_answers_as_the_build(classifier: Path, study_run: str) -> None:
    orphan = _log_release(classifier, study_run)
    reference = _answers(orphan)
    assert reuse_release(release_models(study_run, SOURCE), DECISION, reference) == orphan
    assert [m.model_id for m in release_models(study_run, SOURCE)] == [orphan]  # nothing logged beside it
    assert _status(orphan) == LoggedModelStatus.READY
    assert release_models(study_run, "m-other-weights") == []  # another source's releases are not this one's


def test_a_resume_fails_every_orphan_it_does_not_reuse(classifier: Path, study_run: str) -> None:
    elsewhere = _log_release(classifier, study_run, {**DECISION, "newscat.serving.default": "onnx/int8"})
    cut_short = mlflow.initialize_logged_model(  # a process killed during the upload: PENDING, no files
        name="release-trial-0",
        tags={STUDY_RUN_TAG: study_run, "newscat.role": "release", SOURCE_MODEL_TAG: SOURCE, **DECISION},
    ).model_id
    good = _log_release(classifier, study_run)
    reference = _answers(good)
    assert reuse_release(release_models(study_run, SOURCE), DECISION, reference) == good
    statuses = {m.model_id: m.status for m in release_models(study_run, SOURCE)}
    assert statuses == {
        elsewhere: LoggedModelStatus.FAILED,  # served on another path than the build's decision
        cut_short: LoggedModelStatus.FAILED,
        good: LoggedModelStatus.READY,
    }


def test_a_resume_fails_an_orphan_that_answers_otherwise(classifier: Path, study_run: str) -> None:
    orphan = _log_release(classifier, study_run)
    assert reuse_release(release_models(study_run, SOURCE), DECISION, _other_answers(_answers(orphan))) is None
    assert _status(orphan) == LoggedModelStatus.FAILED  # the caller logs a new one: one READY release, not two
