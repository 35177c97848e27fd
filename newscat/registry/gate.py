"""The champion/challenger gate: compare two models' paired predictions on the same data, decide, explain."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from newscat.evaluation.report import Predictions, report_metrics

METRICS = ("accuracy", "macro_f1")


@dataclass(frozen=True)
class GateDecision:
    """The comparison of a challenger with the champion, and whether the challenger may take over."""

    challenger: str  # version
    champion: str | None
    metric: str
    margin: float
    alpha: float
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float] = field(default_factory=dict)
    only_challenger_right: int = 0  # McNemar's b: paired rows the challenger gets right and the champion wrong
    only_champion_right: int = 0  # McNemar's c
    p_value: float = 1.0
    passed: bool = False
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    min_accuracy: float = 0.0  # the floor a first champion must reach
    baseline_accuracy: float | None = None  # always predicting the most frequent class, on the same rows
    max_drop: float | None = None  # set: a guard (the challenger may lose at most this much, not significantly)
    challenger_path: str = ""  # the serving path (backend/precision) each version was scored on: its recorded one
    champion_path: str = ""

    def table(self) -> str:
        """The comparison as a fixed-width text table, followed by the verdict."""
        lines = [f"{'metric':<12}{'champion':>12}{'challenger':>12}{'delta':>10}"]
        for name in (*METRICS, "ece"):
            new = self.challenger_metrics.get(name)
            old = self.champion_metrics.get(name)
            delta = "" if old is None or new is None else f"{new - old:+.4f}"
            lines.append(f"{name:<12}{_cell(old):>12}{_cell(new):>12}{delta:>10}")
        lines.append(
            f"versions: champion {self.champion or '-'}, challenger {self.challenger}; "
            f"data {self.data.get('source', '?')} [{self.data.get('split', '?')}], {self.data.get('rows', '?')} rows, "
            f"digest {self.data.get('digest', '?')}"
        )
        if self.challenger_path or self.champion_path:
            lines.append(
                f"scored on each version's recorded serving path: champion {self.champion_path or '-'}, "
                f"challenger {self.challenger_path or '-'}"
            )
        if self.baseline_accuracy is not None:
            lines.append(
                f"floor for a first champion: accuracy >= {self.min_accuracy}; "
                f"majority-class baseline {self.baseline_accuracy:.4f}"
            )
        if self.champion is not None:
            required = (
                f"required {self.metric} gain > {self.margin}"
                if self.max_drop is None
                else f"allowed {self.metric} drop <= {self.max_drop}, and no significant loss"
            )
            lines.append(
                f"McNemar exact: only challenger right {self.only_challenger_right}, only champion right "
                f"{self.only_champion_right}, p = {self.p_value:.4g} (alpha {self.alpha}); {required}"
            )
        lines.append(f"{'PASS' if self.passed else 'REFUSED'}: {self.reason}")
        return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> tuple[int, int, float]:
    """McNemar's exact test on paired right/wrong outcomes: (only a right, only b right, two-sided p-value)."""
    from scipy.stats import binomtest

    a_correct, b_correct = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a_correct.shape != b_correct.shape:
        raise ValueError("McNemar's test needs paired outcomes on the same rows")
    only_a = int(np.sum(a_correct & ~b_correct))
    only_b = int(np.sum(~a_correct & b_correct))
    if only_a + only_b == 0:
        return 0, 0, 1.0
    return only_a, only_b, float(binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue)


def decide(
    challenger: Predictions,
    champion: Predictions | None,
    *,
    challenger_version: str,
    champion_version: str | None,
    metric: str = "accuracy",
    margin: float = 0.0,
    alpha: float = 0.05,
    min_accuracy: float = 0.0,
    max_drop: float | None = None,
) -> GateDecision:
    """Pass when there is no champion and the challenger reaches `min_accuracy`, or when it beats the champion by
    more than `margin` and McNemar's p < `alpha`. With `max_drop` the gate is a guard against regression instead: pass
    unless the challenger loses more than `max_drop` or loses significantly (McNemar's p < `alpha`)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    new = report_metrics(challenger)
    common = {
        "challenger": challenger_version,
        "champion": champion_version,
        "metric": metric,
        "margin": margin,
        "alpha": alpha,
        "challenger_metrics": new,
        "data": challenger.data,
        "min_accuracy": min_accuracy,
        "baseline_accuracy": majority_baseline(challenger.labels),
        "challenger_path": str(challenger.data.get("scored_path", "")),
        "champion_path": str(champion.data.get("scored_path", "")) if champion is not None else "",
    }
    if champion is None:
        return _first_champion(common, new["accuracy"], min_accuracy)
    if champion.data.get("digest") != challenger.data.get("digest") or not np.array_equal(
        champion.labels, challenger.labels
    ):
        raise ValueError("champion and challenger must be scored on the same rows")
    if champion.label_names != challenger.label_names:  # McNemar pairs right/wrong: only the same classes compare
        raise ValueError(
            f"champion and challenger must have the same classes in the same order; got {list(champion.label_names)}"
            f" and {list(challenger.label_names)}"
        )
    old = report_metrics(champion)
    b, c, p_value = mcnemar_exact(challenger.correct, champion.correct)
    gain = new[metric] - old[metric]
    if max_drop is not None:
        passed, reason = _guard(gain, max_drop, lost=c > b and p_value < alpha, metric=metric, p_value=p_value)
    elif gain <= margin:
        passed, reason = False, f"{metric} gain {gain:+.4f} is not above the margin {margin}"
    elif p_value >= alpha:
        passed, reason = False, f"the difference is not significant (McNemar p = {p_value:.4g} >= {alpha})"
    else:
        passed, reason = True, f"{metric} gain {gain:+.4f} > {margin} and McNemar p = {p_value:.4g} < {alpha}"
    return GateDecision(
        **common,
        champion_metrics=old,
        only_challenger_right=b,
        only_champion_right=c,
        p_value=p_value,
        passed=passed,
        reason=reason,
        max_drop=max_drop,
    )


def _guard(gain: float, max_drop: float, *, lost: bool, metric: str, p_value: float) -> tuple[bool, str]:
    """The regression guard's verdict: a retrained challenger must keep what the champion could do."""
    if gain < -max_drop:
        return False, f"{metric} drop {-gain:.4f} is above the allowed {max_drop}"
    if lost:
        return False, f"the champion is significantly better here (McNemar p = {p_value:.4g})"
    return True, f"{metric} change {gain:+.4f} is within the allowed drop {max_drop}, and no significant loss"


def majority_baseline(labels: np.ndarray) -> float:
    """The accuracy of always answering the most frequent label."""
    labels = np.asarray(labels)
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else 0.0


def _first_champion(common: dict[str, Any], accuracy: float, min_accuracy: float) -> GateDecision:
    """No champion yet: the challenger takes over if it reaches the floor."""
    if accuracy < min_accuracy:
        reason = f"no champion yet, but accuracy {accuracy:.4f} is below the floor {min_accuracy}"
        return GateDecision(**common, passed=False, reason=reason)
    reason = f"no champion yet: the challenger becomes champion (accuracy {accuracy:.4f} >= floor {min_accuracy})"
    return GateDecision(**common, passed=True, reason=reason)
