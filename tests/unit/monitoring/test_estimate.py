"""The label-free accuracy estimate: calibrated on the reference's correctness it tracks the true accuracy of an
overconfident model where the mean top-class probability does not; without correctness it falls back and says so."""

from __future__ import annotations

import numpy as np
import pandas as pd

from newscat.export.reference import CORRECT, correctness, features_of_answers
from newscat.monitoring.estimate import ConfidenceCalibration, estimate_accuracy


def overconfident(rng: np.random.Generator, n: int, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Confidences uniform in [low, high] and whether each answer is right: P(right | c) = 2c - 1 (a model that
    says 0.9 is right 80% of the time)."""
    confidence = rng.uniform(low, high, n)
    return confidence, (rng.uniform(size=n) < 2 * confidence - 1).astype(float)


def test_the_calibrated_estimate_tracks_true_accuracy_where_mean_confidence_does_not() -> None:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(dict(zip(("confidence", CORRECT), overconfident(rng, 3000, 0.55, 1.0), strict=True)))
    calibration = ConfidenceCalibration.from_reference(reference)
    assert calibration is not None and calibration.rows == 3000
    for low, high in ((0.55, 1.0), (0.8, 1.0), (0.55, 0.75)):  # healthy, easier and harder traffic
        confidence, right = overconfident(rng, 5000, low, high)
        estimate = estimate_accuracy(confidence, calibration)
        assert estimate.calibrated and "calibrated on 3,000 labelled reference rows" in estimate.method
        assert abs(estimate.value - right.mean()) < 0.03
        assert confidence.mean() - right.mean() > 0.08  # the bare mean is off by the model's overconfidence


def test_a_reference_without_correctness_falls_back_and_says_so() -> None:
    rng = np.random.default_rng(1)
    confidence, _ = overconfident(rng, 300, 0.55, 1.0)
    assert ConfidenceCalibration.from_reference(pd.DataFrame({"confidence": confidence})) is None
    few = pd.DataFrame({"confidence": confidence, CORRECT: [1.0] * 50 + [np.nan] * 250})
    assert ConfidenceCalibration.from_reference(few) is None  # 50 labelled rows: too few to fit
    estimate = estimate_accuracy(confidence, None)
    assert not estimate.calibrated and estimate.value == confidence.mean()
    assert "the reference records no correctness" in estimate.method
    assert estimate_accuracy([], None) is None


def test_the_reference_records_correctness_where_labels_are_known() -> None:
    probabilities = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    assert np.array_equal(correctness(probabilities, [0, 0, -1]), [1.0, 0.0, np.nan], equal_nan=True)
    frame = features_of_answers(
        ["a b", "c", "d e f"], probabilities, [False] * 3, ([4, 3, 5], [0, 0, 0]), ["x", "y"], [0, 0, -1]
    )
    assert frame[CORRECT].tolist()[:2] == [1.0, 0.0] and np.isnan(frame[CORRECT].iloc[2])
    assert CORRECT not in features_of_answers(["a"], probabilities[:1], [False], ([3], [0]), ["x", "y"]).columns


def test_isotonic_says_never_wrong_above_the_last_mistake_of_a_small_reference_and_platt_does_not() -> None:
    # 500 rows of a model right 94% of the time: about 30 mistakes, none above some confidence; isotonic calibrates
    # everything above it to 1.0, Platt keeps what the logistic fit of all rows says.
    rng = np.random.default_rng(2)
    confidence = rng.beta(12, 1, 500)
    right = (rng.uniform(size=500) < confidence).astype(float)
    top = confidence[right == 0].max()
    isotonic = ConfidenceCalibration(confidence, right, "isotonic")
    platt = ConfidenceCalibration(confidence, right)
    assert platt.method == "platt" and isotonic.probability_right([top + 1e-3])[0] == 1.0
    assert platt.probability_right([top + 1e-3])[0] < 1.0


def test_an_estimate_below_the_accuracy_floor_is_a_problem_only_when_calibrated_and_on_enough_texts() -> None:
    from newscat.config import MonitorConfig
    from newscat.monitoring.estimate import AccuracyEstimate, estimate_problems

    cfg = MonitorConfig()  # max_accuracy_drop 0.05, min_texts 100
    low = AccuracyEstimate(0.80, True, "confidence calibrated on 500 labelled reference rows")
    (problem,) = estimate_problems(low, 1000, 0.90, cfg)
    assert problem.startswith("estimated accuracy 0.8000 on 1,000 unlabelled answers (confidence calibrated")
    assert "is below 0.8500 (test accuracy 0.9000 - monitor.max_accuracy_drop 0.05)" in problem
    assert estimate_problems(AccuracyEstimate(0.86, True, ""), 1000, 0.90, cfg) == []
    assert estimate_problems(low, 99, 0.90, cfg) == []  # too few answers
    assert estimate_problems(AccuracyEstimate(0.80, False, ""), 1000, 0.90, cfg) == []  # the bare mean: not judged
    assert estimate_problems(low, 1000, None, cfg) == []  # no test accuracy recorded
