from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from newscat.evaluation.report import Predictions
from newscat.registry.gate import decide, mcnemar_exact

NAMES = ("a", "b")


def _preds(correct: list[bool], digest: str = "d") -> Predictions:
    labels = np.zeros(len(correct), dtype=int)
    predicted = np.where(correct, 0, 1)
    probabilities = np.stack([np.where(correct, 0.9, 0.1), np.where(correct, 0.1, 0.9)], axis=1)
    return Predictions(
        [str(i) for i in range(len(correct))],
        labels,
        predicted,
        probabilities,
        NAMES,
        {"source": "s", "split": "test", "digest": digest, "rows": len(correct)},
    )


def test_mcnemar_counts_discordant_pairs_only() -> None:
    a = np.array([1, 1, 1, 0, 0, 1], dtype=bool)
    b = np.array([1, 0, 0, 1, 0, 1], dtype=bool)
    only_a, only_b, p_value = mcnemar_exact(a, b)
    assert (only_a, only_b) == (2, 1)
    assert p_value == pytest.approx(binomtest(1, 3, 0.5).pvalue)
    assert mcnemar_exact(a, a) == (0, 0, 1.0)
    with pytest.raises(ValueError, match="paired"):
        mcnemar_exact(a, b[:3])


def test_no_champion_passes() -> None:
    decision = decide(_preds([True, False]), None, challenger_version="1", champion_version=None)
    assert decision.passed and "no champion" in decision.reason
    assert "PASS" in decision.table()


def test_a_first_champion_must_reach_the_floor() -> None:
    challenger = _preds([True, True, True, False])  # accuracy 0.75; all labels 0: the majority baseline is 1.0
    refused = decide(challenger, None, challenger_version="1", champion_version=None, min_accuracy=0.8)
    assert not refused.passed and refused.reason == "no champion yet, but accuracy 0.7500 is below the floor 0.8"
    assert refused.baseline_accuracy == 1.0 and "floor for a first champion: accuracy >= 0.8" in refused.table()
    passed = decide(challenger, None, challenger_version="1", champion_version=None, min_accuracy=0.75)
    assert passed.passed and "accuracy 0.7500 >= floor 0.75" in passed.reason


def test_clear_win_passes_and_tie_is_refused() -> None:
    better = _preds([True] * 90 + [False] * 10)
    worse = _preds([True] * 70 + [False] * 30)
    win = decide(better, worse, challenger_version="2", champion_version="1")
    assert win.passed and win.only_challenger_right == 20 and win.only_champion_right == 0
    assert win.p_value < 1e-5
    table = win.table()
    assert "0.7000" in table and "0.9000" in table and "+0.2000" in table and "McNemar" in table
    tie = decide(better, better, challenger_version="2", champion_version="1")
    assert not tie.passed and "not above the margin" in tie.reason and "REFUSED" in tie.table()


def test_small_gain_without_significance_is_refused_and_margin_applies() -> None:
    champion = _preds([True] * 80 + [False] * 20)
    challenger = _preds([True] * 82 + [False] * 18)
    refused = decide(challenger, champion, challenger_version="2", champion_version="1")
    assert not refused.passed and "not significant" in refused.reason
    strong = _preds([True] * 95 + [False] * 5)
    assert not decide(strong, champion, challenger_version="2", champion_version="1", margin=0.2).passed


def test_versions_must_be_scored_on_the_same_rows() -> None:
    with pytest.raises(ValueError, match="same rows"):
        decide(_preds([True, True], "x"), _preds([True, True], "y"), challenger_version="2", champion_version="1")
    with pytest.raises(ValueError, match="metric must be"):
        decide(_preds([True]), None, challenger_version="1", champion_version=None, metric="loss")


def test_versions_with_other_classes_are_not_compared() -> None:
    challenger, champion = _preds([True, False, True]), _preds([True, True, False])
    renamed = Predictions(**{**champion.__dict__, "label_names": ("b", "a")})
    with pytest.raises(ValueError, match="the same classes in the same order"):
        decide(challenger, renamed, challenger_version="2", champion_version="1")


def test_twenty_classes_are_gated_like_two() -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(400) % 20
    names = tuple(f"c{i}" for i in range(20))

    def scored(accuracy: float) -> Predictions:
        predicted = np.where(rng.random(400) < accuracy, labels, (labels + 1) % 20)
        probabilities = np.full((400, 20), 0.01)
        probabilities[np.arange(400), predicted] = 0.81
        data = {"source": "s", "split": "test", "digest": "d", "rows": 400}
        return Predictions([str(i) for i in range(400)], labels, predicted, probabilities, names, data)

    decision = decide(scored(0.9), scored(0.6), challenger_version="2", champion_version="1")
    assert decision.passed and decision.baseline_accuracy == pytest.approx(0.05)
    assert decision.only_challenger_right > decision.only_champion_right


def test_the_regression_guard_passes_a_tie_and_a_small_loss_but_not_a_large_or_significant_one() -> None:
    champion = _preds([True] * 100)
    guard = {"challenger_version": "2", "champion_version": "1", "max_drop": 0.05}
    tie = decide(_preds([True] * 100), champion, **guard)
    assert tie.passed and "change +0.0000 is within the allowed drop 0.05" in tie.reason
    assert "allowed accuracy drop <= 0.05, and no significant loss" in tie.table()
    small = decide(_preds([False] * 3 + [True] * 97), champion, **guard)  # 3 lost, p = 0.25
    assert small.passed and small.only_champion_right == 3
    large = decide(_preds([False] * 8 + [True] * 92), champion, **guard)
    assert not large.passed and large.reason == "accuracy drop 0.0800 is above the allowed 0.05"
    significant = decide(_preds([False] * 6 + [True] * 94), champion, **{**guard, "max_drop": 0.1})  # p = 0.031
    assert not significant.passed and "champion is significantly better here" in significant.reason
    # Without max_drop the same tie is refused: the improvement gate asks for a significant gain.
    assert not decide(_preds([True] * 100), champion, challenger_version="2", champion_version="1").passed
