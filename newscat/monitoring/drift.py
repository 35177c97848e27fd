"""Input and prediction drift between the training reference and the live window, measured by Evidently.

Evidently's DataDriftPreset picks the test per feature and sample size (K-S / chi-squared on small samples,
Wasserstein / Jensen-Shannon distances on larger ones) and says, per feature, whether it drifted. Evidently is the
optional extra `newscat[monitor]`: it is imported here only, never by the served model.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from newscat.errors import NewscatError
from newscat.monitoring.reference import CATEGORICAL, FEATURES, NUMERIC

_TEST_PREFIX = "Value Drift for column "


class MonitorExtraMissing(NewscatError):
    """Evidently is not installed."""


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift: Evidently's method, score and threshold, and its verdict."""

    feature: str
    method: str
    score: float
    threshold: float
    drifted: bool

    def evidence(self) -> str:
        """The score against its threshold, the right way round: a p-value drifts below it, a distance above."""
        below = "p_value" in self.method
        return f"{self.method} {self.score:.3g} {'<' if below else '>='} {self.threshold:g}"


@dataclass(frozen=True)
class DriftResult:
    features: tuple[FeatureDrift, ...]
    html: str  # Evidently's report, a standalone page

    @property
    def share(self) -> float:
        """The share of features that drifted."""
        return sum(f.drifted for f in self.features) / len(self.features)

    def feature(self, name: str) -> FeatureDrift:
        return next(f for f in self.features if f.feature == name)


def measure_drift(reference: pd.DataFrame, live: pd.DataFrame) -> DriftResult:
    """Evidently's per-feature drift of `live` against `reference` (both feature tables) and its HTML report."""
    try:
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset
    except ImportError as exc:
        raise MonitorExtraMissing(
            f"drift needs Evidently ({exc}): pip install 'newscat[monitor]' (it stays out of the served model)"
        ) from exc
    definition = DataDefinition(numerical_columns=list(NUMERIC), categorical_columns=list(CATEGORICAL))
    with warnings.catch_warnings():  # constant features (no unknown tokens anywhere) divide by zero inside
        warnings.simplefilter("ignore")
        snapshot = Report([DataDriftPreset(columns=list(FEATURES))], include_tests=True).run(
            Dataset.from_pandas(live[list(FEATURES)], data_definition=definition),
            Dataset.from_pandas(reference[list(FEATURES)], data_definition=definition),
        )
        result = snapshot.dict()
        with tempfile.TemporaryDirectory(prefix="newscat-drift-") as tmp:
            snapshot.save_html(str(Path(tmp) / "drift.html"))
            html = (Path(tmp) / "drift.html").read_text(encoding="utf-8")
    verdicts = {
        t["name"][len(_TEST_PREFIX) :]: str(t["status"]).endswith("FAIL")
        for t in result["tests"]
        if t["name"].startswith(_TEST_PREFIX)
    }
    features = []
    for metric in result["metrics"]:
        config = metric["config"]
        if config.get("column") in FEATURES and config.get("method"):
            name = config["column"]
            features.append(
                FeatureDrift(name, config["method"], float(metric["value"]), float(config["threshold"]), verdicts[name])
            )
    features.sort(key=lambda f: FEATURES.index(f.feature))
    return DriftResult(tuple(features), html)
