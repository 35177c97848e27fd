"""The accuracy of answers that received no true label, estimated from the model's confidence, calibrated on the
reference.

The mean top-class probability is an accuracy estimate only for a calibrated model; newscat's models are not (a few
points under- or over-confident). Confidence-based performance estimation (CBPE, as NannyML calls it) fixes that
with what the release already knows: for each reference row (validation texts the final model did not train on) its
confidence and whether the answer was right. An isotonic regression of correctness on confidence, fitted on those
rows, maps a live answer's confidence to its probability of being right; the mean over the window is the estimate.
It assumes that a text answered with confidence c is right as often live as in the reference (no change in what the
labels mean): it follows shifts in which texts come, not a change of the topics' meaning.

A reference logged before newscat recorded correctness has no `correct` column: the estimate falls back to the mean
top-class probability, and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

CORRECT = "correct"  # the reference's column: 1.0 the model's answer was right, 0.0 wrong, NaN no label known
MIN_CALIBRATION_ROWS = 100  # fewer labelled reference rows: too few to fit, fall back


@dataclass(frozen=True)
class AccuracyEstimate:
    """The estimated accuracy and how it was made."""

    value: float
    calibrated: bool
    method: str


class ConfidenceCalibration:
    """P(answer right | confidence), isotonic (non-decreasing in confidence), fitted on labelled reference rows."""

    def __init__(self, confidence: Sequence[float], correct: Sequence[float]) -> None:
        from sklearn.isotonic import IsotonicRegression

        self.rows = len(confidence)
        self._fit = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(
            np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
        )

    @classmethod
    def from_reference(cls, reference: pd.DataFrame) -> ConfidenceCalibration | None:
        """The calibration of a reference with correctness (None: it has none, or too few labelled rows)."""
        if CORRECT not in reference.columns:
            return None
        known = reference[reference[CORRECT].notna()]
        if len(known) < MIN_CALIBRATION_ROWS:
            return None
        return cls(known["confidence"].to_numpy(), known[CORRECT].to_numpy())

    def probability_right(self, confidence: Sequence[float]) -> np.ndarray:
        return self._fit.predict(np.asarray(confidence, dtype=np.float64))


def estimate_accuracy(
    confidence: Sequence[float], calibration: ConfidenceCalibration | None
) -> AccuracyEstimate | None:
    """The expected accuracy of answers with these top-class probabilities (None: no answers)."""
    values = np.asarray(confidence, dtype=np.float64)
    if values.size == 0:
        return None
    if calibration is None:
        return AccuracyEstimate(
            float(values.mean()), False, "mean top-class probability (the reference records no correctness)"
        )
    return AccuracyEstimate(
        float(calibration.probability_right(values).mean()),
        True,
        f"confidence calibrated on {calibration.rows:,} labelled reference rows",
    )


def correctness(probabilities: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Per row, 1.0 where the top class is the label, 0.0 where not, NaN where the label is unknown (negative)."""
    truth = np.asarray(labels, dtype=np.int64)
    right = (probabilities.argmax(axis=1) == truth).astype(np.float64)
    return np.where(truth >= 0, right, np.nan)
