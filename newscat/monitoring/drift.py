"""Input and prediction drift between the training reference and the live window: a decision newscat controls.

Which features are tested, with which test, is pinned (the reference's size never changes it):

- `tokens` (K-S) stands for the text's length. `chars`, `tokens` and `truncated` move together (truncation is
  `tokens` at the model's cap, `chars` is `tokens` times a near-constant), so testing all three would count one
  change three times; `chars` and `truncated` are shown, not tested.
- `unknown_share` (two-sample Kolmogorov-Smirnov, asymptotic p-value);
- `label`, the predicted label (chi-squared test of homogeneity on the label counts): prediction drift.

`confidence` is shown, not tested: its distribution differs between the reference and healthy traffic (the
validation rows chose the model, which is more sure of them: K-S D 0.12 against the whole test split in
benchmarks/results/2026-12-05-monitor_alarms.json), and what matters about it is the accuracy it predicts. That is
judged by the calibrated estimate (`newscat.monitoring.estimate.estimate_problems`).

A tested feature drifted when both hold:

1. its p-value is below `ALPHA / k` (Bonferroni over the k tested features): on traffic like the reference, the
   chance that any feature of a run drifts is at most `ALPHA`, whatever the sizes;
2. its effect, the largest share of texts that moved (the K-S statistic D for a number: the largest gap between
   the two cumulative distributions; the total variation distance for the label), is at least `EFFECT_FLOOR`. A test
   on 10,000 texts finds the small differences between any two news samples (the reference is a few hundred
   validation rows of the training file, the traffic another sample); 0.1, fixed in advance, is the distance
   Evidently's own large-sample tests call drift, not a figure tuned on the benchmark's test split.

Evidently (the optional extra `newscat[monitor]`) draws the HTML report only; it decides nothing, and it is
imported here only, never by the served model.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency, ks_2samp

from newscat.errors import NewscatError
from newscat.export.reference import CATEGORICAL, FEATURES, NUMERIC

ALPHA = 0.05  # the family-wise false-alarm rate of one run, on traffic like the reference
EFFECT_FLOOR = 0.1  # the smallest share of texts that must have moved (K-S D, total variation) to call it drift
# The tested features and their pinned test; the others are shown for what they are (described, not tested).
TESTS = {"tokens": "K-S", "unknown_share": "K-S", "label": "chi-square"}
# feature -> where it is judged instead
DESCRIBED = {"chars": "moves with tokens", "truncated": "moves with tokens", "confidence": "see the accuracy estimate"}


class MonitorExtraMissing(NewscatError):
    """Evidently is not installed."""


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift: its pinned test's p-value against alpha / k, its effect against the floor, the verdict.

    A described feature (`tested` false) carries its effect and p-value for reading, never a verdict."""

    feature: str
    method: str
    score: float  # the p-value
    threshold: float  # alpha / k (Bonferroni)
    drifted: bool
    effect: float = 0.0  # K-S D or total variation distance, in [0, 1]
    floor: float = EFFECT_FLOOR
    tested: bool = True

    def evidence(self) -> str:
        """Why it drifted or not: the p-value against alpha / k and the effect against the floor."""
        if not self.tested:
            return f"not tested: {DESCRIBED.get(self.feature, 'moves with a tested feature')}"
        p = f"{self.method} p {self.score:.3g} {'<' if self.score < self.threshold else '>='} {self.threshold:.3g}"
        effect = f"{self.effect_name} {self.effect:.3f} {'>=' if self.effect >= self.floor else '<'} {self.floor:g}"
        return f"{p}, {effect}"

    @property
    def effect_name(self) -> str:
        return "D" if self.method == "K-S" else "TV"


@dataclass(frozen=True)
class DriftResult:
    features: tuple[FeatureDrift, ...]
    html: str = ""  # Evidently's report, a standalone page ("" where it was not drawn)
    alpha: float = ALPHA

    @property
    def tested(self) -> tuple[FeatureDrift, ...]:
        return tuple(f for f in self.features if f.tested)

    @property
    def drifted(self) -> tuple[str, ...]:
        return tuple(f.feature for f in self.tested if f.drifted)

    @property
    def share(self) -> float:
        """The share of tested features that drifted."""
        return len(self.drifted) / len(self.tested)

    def feature(self, name: str) -> FeatureDrift:
        return next(f for f in self.features if f.feature == name)


def judge_drift(reference: pd.DataFrame, live: pd.DataFrame) -> DriftResult:
    """Each feature of `live` against `reference` (feature tables): the tested ones with their pinned test at
    `alpha / k` and the effect floor, the described ones measured and shown (no HTML report: see `measure_drift`)."""
    alpha, floor = ALPHA, EFFECT_FLOOR  # pinned: the false-alarm rate measured is this one's
    threshold = alpha / len(TESTS)
    features = []
    for name in FEATURES:
        tested = name in TESTS
        if name in NUMERIC:
            method, p, effect = "K-S", *_ks(reference[name], live[name])
        else:
            method, p, effect = "chi-square", *_chi_square(reference[name], live[name])
        drifted = tested and p < threshold and effect >= floor
        features.append(FeatureDrift(name, method, p, threshold, drifted, effect, floor, tested))
    return DriftResult(tuple(features), alpha=alpha)


def drift_problems(drift: DriftResult, max_drift_share: float, prediction_drift: bool) -> list[str]:
    """What makes a window unhealthy by drift (the monitor's verdict and the benchmark's count use this): at least
    `max_drift_share` of the tested features drifted (input drift), or the predicted label drifted."""
    problems = []
    drifted = drift.drifted
    if drifted and drift.share >= max_drift_share:
        problems.append(
            f"input drift: {len(drifted)} of {len(drift.tested)} tested features drifted ({', '.join(drifted)}; "
            f"share {drift.share:.2f} >= monitor.max_drift_share {max_drift_share:g}; each at p < "
            f"{drift.alpha:g}/{len(drift.tested)} and effect >= {EFFECT_FLOOR:g})"
        )
    label = drift.feature("label")
    if prediction_drift and label.drifted:
        problems.append(f"prediction drift: the predicted labels' distribution moved ({label.evidence()})")
    return problems


def measure_drift(reference: pd.DataFrame, live: pd.DataFrame) -> DriftResult:
    """`judge_drift`'s verdicts with Evidently's HTML report of the same two tables."""
    try:
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset
    except ImportError as exc:
        raise MonitorExtraMissing(
            f"drift needs Evidently ({exc}): pip install 'newscat[monitor]' (it stays out of the served model)"
        ) from exc
    result = judge_drift(reference, live)
    definition = DataDefinition(numerical_columns=list(NUMERIC), categorical_columns=list(CATEGORICAL))
    with warnings.catch_warnings():  # constant features (no unknown tokens anywhere) divide by zero inside
        warnings.simplefilter("ignore")
        snapshot = Report([DataDriftPreset(columns=list(FEATURES))]).run(
            Dataset.from_pandas(live[list(FEATURES)], data_definition=definition),
            Dataset.from_pandas(reference[list(FEATURES)], data_definition=definition),
        )
        with tempfile.TemporaryDirectory(prefix="newscat-drift-") as tmp:
            snapshot.save_html(str(Path(tmp) / "drift.html"))
            html = (Path(tmp) / "drift.html").read_text(encoding="utf-8")
    return DriftResult(result.features, html, result.alpha)


def _ks(reference: pd.Series, live: pd.Series) -> tuple[float, float]:
    """(p-value, D) of the two-sample K-S test, asymptotic p-value at every size (pinned: no switch by size)."""
    a, b = reference.to_numpy(dtype=np.float64), live.to_numpy(dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return 1.0, 0.0
    result = ks_2samp(a, b, method="asymp")
    return float(result.pvalue), float(result.statistic)


def _chi_square(reference: Sequence[object], live: Sequence[object]) -> tuple[float, float]:
    """(p-value, total variation distance) of the chi-squared test of homogeneity on the category counts."""
    ref, cur = pd.Series(reference).value_counts(), pd.Series(live).value_counts()
    table = pd.concat([ref, cur], axis=1).fillna(0).to_numpy(dtype=np.float64).T  # 2 x categories seen
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0, 0.0  # one category in both: nothing can differ
    shares = table / table.sum(axis=1, keepdims=True)
    distance = 0.5 * float(np.abs(shares[0] - shares[1]).sum())
    return float(chi2_contingency(table, correction=False).pvalue), distance
