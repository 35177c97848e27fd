"""The drift decision on synthetic feature tables: its family-wise false alarms on traffic like the reference, the
test pinned whatever the reference's size, the length features counted once, the effect floor, and detection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from newscat.export.reference import FEATURES, feature_frame
from newscat.monitoring.drift import ALPHA, EFFECT_FLOOR, TESTS, drift_problems, judge_drift

LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def news(
    rng: np.random.Generator,
    n: int,
    *,
    words: float = 40.0,
    shares: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25),
    confidence: tuple[float, float] = (8.0, 1.0),
) -> pd.DataFrame:
    """`n` answers: lengths around `words` words (a few cut at 128 tokens), labels by `shares`, confidence from a
    Beta (`confidence`: its a, b), now and then an unknown token."""
    tokens = np.clip(rng.normal(words, words / 3, n).round().astype(int) + 2, 3, 128)
    chars = (tokens * rng.normal(5.2, 0.4, n)).round().astype(int)
    labels = [LABELS[i] for i in rng.choice(4, n, p=list(shares))]
    return feature_frame(
        chars, tokens, rng.binomial(1, 0.02, n), tokens >= 128, labels, 0.25 + 0.75 * rng.beta(*confidence, n)
    )


def alarms(drift_runs: list) -> float:
    return float(np.mean([bool(drift_problems(d, 0.25, True)) for d in drift_runs]))


@pytest.mark.parametrize(("reference_rows", "live_rows"), [(500, 1000), (3000, 10000)])
def test_traffic_like_the_reference_alarms_in_at_most_alpha_of_runs(reference_rows: int, live_rows: int) -> None:
    # 400 runs, each a fresh reference and live window from one distribution: the share of runs with any drift
    # (any tested feature; labels too) stays within alpha plus sampling slack (3 standard errors at alpha).
    rng = np.random.default_rng(0)
    runs = [judge_drift(news(rng, reference_rows), news(rng, live_rows)) for _ in range(400)]
    slack = 3 * np.sqrt(ALPHA * (1 - ALPHA) / len(runs))
    assert alarms(runs) <= ALPHA + slack
    # Without the correction (each of 3 tests at 0.05) the same runs alarm more: the family is what is controlled.
    raw = np.mean([any(f.score < ALPHA for f in d.tested) for d in runs])
    assert raw > alarms(runs)


def test_the_test_is_pinned_per_feature_whatever_the_reference_size() -> None:
    rng = np.random.default_rng(1)
    live = news(rng, 2000)
    small, large = judge_drift(news(rng, 300), live), judge_drift(news(rng, 5000), live)
    for drift in (small, large):
        assert [f.feature for f in drift.features] == list(FEATURES)
        assert {f.feature: f.method for f in drift.tested} == TESTS
        assert {f.threshold for f in drift.features} == {ALPHA / len(TESTS)}
    assert [f.method for f in small.features] == [f.method for f in large.features]


def test_length_is_tested_once_chars_and_truncation_are_shown_not_counted() -> None:
    rng = np.random.default_rng(2)
    drift = judge_drift(news(rng, 1000), news(rng, 1000, words=12))  # titles: everything about length moves
    assert {f.feature for f in drift.tested} == {"tokens", "unknown_share", "label"}
    assert drift.drifted == ("tokens",)  # one change, counted once
    chars = drift.feature("chars")
    assert not chars.tested and not chars.drifted and chars.effect > 0.5  # measured and shown, no verdict
    assert "not tested: moves with tokens" in chars.evidence()
    assert drift.share == 1 / 3
    assert drift_problems(drift, 0.25, True)[0].startswith("input drift: 1 of 3 tested features drifted (tokens;")


def test_a_significant_but_small_difference_is_not_drift() -> None:
    # 20,000 texts against 20,000: a 2-point move in one class's share is significant at any alpha, yet far below
    # the floor; a 12-point move in each of two classes (TV 0.12) is drift.
    rng = np.random.default_rng(3)
    reference = news(rng, 20000)
    small = judge_drift(reference, news(rng, 20000, shares=(0.27, 0.23, 0.25, 0.25))).feature("label")
    assert small.score < ALPHA / len(TESTS) and small.effect < EFFECT_FLOOR and not small.drifted
    large = judge_drift(reference, news(rng, 5000, shares=(0.37, 0.13, 0.25, 0.25))).feature("label")
    assert large.drifted and large.effect >= EFFECT_FLOOR
    assert "TV" in large.evidence() and ">= 0.1" in large.evidence()


def test_shifts_are_caught_at_1000_texts() -> None:
    rng = np.random.default_rng(4)
    reference = news(rng, 500)
    no_sports = judge_drift(reference, news(rng, 1000, shares=(1 / 3, 0, 1 / 3, 1 / 3)))
    assert any(p.startswith("prediction drift:") for p in drift_problems(no_sports, 0.25, True))
    long = judge_drift(reference, news(rng, 1000, words=80))
    assert long.drifted == ("tokens",) and drift_problems(long, 0.25, True)
    assert not drift_problems(long, 0.5, True)  # one feature of three is below a share of 0.5
    # Confidence is shown, not tested: how far it fell is judged by the accuracy it predicts (test_estimate.py).
    unsure = judge_drift(reference, news(rng, 1000, confidence=(3.0, 2.0)))
    assert unsure.feature("confidence").effect > 0.3 and not unsure.drifted
    assert "see the accuracy estimate" in unsure.feature("confidence").evidence()
