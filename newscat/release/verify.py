"""The release's checks: the test split scored once through the build that answers as the served model will, and
the logged model loaded back as a user would and compared with that build before it may be registered."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from mlflow.entities import LoggedModel, LoggedModelStatus

from newscat.errors import NewscatError
from newscat.evaluation.report import Predictions, predict_split
from newscat.serving.inputs import CHARS_PER_TOKEN_CAP
from newscat.serving.lexical import prepare_texts
from newscat.tracking.models import load_recorded, mark_failed

if TYPE_CHECKING:
    from newscat.release.build import Built
    from newscat.release.context import ReleaseContext

log = logging.getLogger("newscat")
# Test rows sent as one request to the logged model to check it against its release build, and the largest difference
# in a class probability allowed. A text's answer does not depend on its batch-mates (`newscat.serving.model`), so the
# build's scores of the whole split are the reference; only float rounding in differently shaped batches differs.
CHECK_ROWS = 256
CHECK_TOLERANCE = 1e-5


class ReleaseError(NewscatError):
    """The logged release model does not reproduce its release build."""


@dataclass(frozen=True)
class TestScores:
    """The test split scored once, through the served model's code: its predictions and the parts of the mix."""

    predictions: Predictions
    encoder: np.ndarray
    lexical: np.ndarray | None  # the companion's alone (None: no companion was fitted)


def score_test(ctx: ReleaseContext, built: Built) -> TestScores:
    """The test split, scored once on the finally chosen served model (nothing is chosen from it): the served
    probabilities, and the encoder's and companion's alone for the card."""
    build, companion = built.build, built.companion
    test = ctx.data.test
    texts = test["text"].tolist()
    log.info("scoring the %d test rows on the served model (%s)", len(texts), build.scorer.choice)
    scores = build.scores(texts)
    lexical = scores.lexical
    if lexical is None and companion is not None:  # fitted but not served: still measured, for the card
        max_chars = ctx.cfg.model.max_length * CHARS_PER_TOKEN_CAP
        lexical = companion.model.probabilities(prepare_texts(texts, max_chars))
    predictions = Predictions(
        texts=texts,
        labels=test["label"].to_numpy(),
        predicted=scores.probabilities.argmax(axis=1),
        probabilities=scores.probabilities,
        label_names=tuple(ctx.data.label_names),
        data=dict(ctx.records["test"]),
    )
    return TestScores(predictions, scores.encoder, lexical)


def reuse_release(orphans: list[LoggedModel], decision: Mapping[str, str], reference: Predictions) -> str | None:
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
