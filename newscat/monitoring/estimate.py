"""The accuracy of answers that received no true label, estimated from the model's confidence, calibrated on the
reference.

The mean top-class probability is an accuracy estimate only for a calibrated model; newscat's models are not (a few
points under- or over-confident). Confidence-based performance estimation (CBPE, as NannyML calls it) fixes that
with what the release already knows: for each reference row (validation texts the final model did not train on) its
confidence and whether the answer was right. A logistic fit of correctness on the logit of confidence (Platt scaling:
two parameters), fitted on those rows, maps a live answer's confidence to its probability of being right; the mean
over the window is the estimate. Platt, not isotonic regression, because references are small: 500 validation rows
hold some 30 wrong answers, and an isotonic fit then says "never wrong" above the highest-scored mistake (the
benchmark measures both). It assumes that a text answered with confidence c is right as often live as in the
reference (no change in what the labels mean): it follows shifts in which texts come, not a change of the topics'
meaning. The validation rows also chose the model (trial, checkpoint, companion share), so they flatter it a little.

The estimate is also judged: below the version's test accuracy minus `monitor.max_accuracy_drop` (the floor labelled
answers are held to), on at least `monitor.min_texts` unlabelled answers, the model is unhealthy. That is how a fall
in confidence counts: by the accuracy it predicts, not by its distribution's distance from the reference's.

A reference logged before newscat recorded correctness has no `correct` column: the estimate falls back to the mean
top-class probability, and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from newscat.export.reference import CORRECT

if TYPE_CHECKING:
    from newscat.config import MonitorConfig

MIN_CALIBRATION_ROWS = 100  # fewer labelled reference rows: too few to fit, fall back
METHODS = ("platt", "isotonic")
_EPS = 1e-6  # confidence is clipped into (0, 1) before its logit


@dataclass(frozen=True)
class AccuracyEstimate:
    """The estimated accuracy and how it was made."""

    value: float
    calibrated: bool
    method: str


class ConfidenceCalibration:
    """P(answer right | confidence), fitted on labelled reference rows: Platt scaling (the monitor's), or isotonic."""

    def __init__(self, confidence: Sequence[float], correct: Sequence[float], method: str = "platt") -> None:
        if method not in METHODS:
            raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")
        x, y = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
        self.rows, self.method = len(x), method
        if method == "isotonic" or len(np.unique(y)) < 2:  # all right (or all wrong): nothing for a logistic fit
            from sklearn.isotonic import IsotonicRegression

            self._fit = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x, y)
        else:
            from sklearn.linear_model import LogisticRegression

            self._fit = LogisticRegression(C=1e6).fit(_logit(x)[:, None], y.astype(int))

    @classmethod
    def from_reference(cls, reference: pd.DataFrame, method: str = "platt") -> ConfidenceCalibration | None:
        """The calibration of a reference with correctness (None: it has none, or too few labelled rows)."""
        if CORRECT not in reference.columns:
            return None
        known = reference[reference[CORRECT].notna()]
        if len(known) < MIN_CALIBRATION_ROWS:
            return None
        return cls(known["confidence"].to_numpy(), known[CORRECT].to_numpy(), method)

    def probability_right(self, confidence: Sequence[float]) -> np.ndarray:
        x = np.asarray(confidence, dtype=np.float64)
        if hasattr(self._fit, "predict_proba"):
            return self._fit.predict_proba(_logit(x)[:, None])[:, 1]
        return self._fit.predict(x)


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


def estimate_problems(
    estimate: AccuracyEstimate | None, answers: int, test_accuracy: float | None, cfg: MonitorConfig
) -> list[str]:
    """What makes a window unhealthy by its estimated accuracy (the monitor's verdict and the benchmark use this):
    calibrated, on at least `cfg.min_texts` unlabelled answers, below test accuracy - `cfg.max_accuracy_drop`."""
    if estimate is None or not estimate.calibrated or test_accuracy is None or answers < cfg.min_texts:
        return []
    floor = test_accuracy - cfg.max_accuracy_drop
    if estimate.value >= floor:
        return []
    return [
        f"estimated accuracy {estimate.value:.4f} on {answers:,} unlabelled answers ({estimate.method}) is below "
        f"{floor:.4f} (test accuracy {test_accuracy:.4f} - monitor.max_accuracy_drop {cfg.max_accuracy_drop:g})"
    ]


def _logit(confidence: np.ndarray) -> np.ndarray:
    clipped = np.clip(confidence, _EPS, 1 - _EPS)
    return np.log(clipped / (1 - clipped))
