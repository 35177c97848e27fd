"""The judging logic of the behavioural checks, with deterministic keyword classifiers as the model."""

from __future__ import annotations

import pandas as pd

from newscat.evaluation.checks import DIR_CASES, INV_TEMPLATES, MFT_CASES, run_checks

TOPICS = ("World", "Sports", "Business", "Sci/Tech")


class KeywordModel:
    """Scores texts by keywords; `names` fixes a topic whatever the words (to break invariance)."""

    def __init__(self, keywords: dict[str, tuple[str, ...]], classes: tuple[str, ...] = TOPICS) -> None:
        self.keywords, self.classes = keywords, classes

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        rows = []
        for text in frame["text"]:
            hits = {c: 1.0 + sum(k in text for k in self.keywords.get(c, ())) for c in self.classes}
            total = sum(hits.values())
            probabilities = {c: v / total for c, v in hits.items()}
            label = max(probabilities, key=probabilities.get)
            rows.append({"label": label, "score": probabilities[label], "probabilities": probabilities})
        return pd.DataFrame(rows)


def test_a_sports_only_model_fails_the_other_topics_and_is_listed() -> None:
    report = run_checks(KeywordModel({"Sports": ("",)}))  # every text counts as sports
    assert report.results["MFT"] == {"passed": 4, "failed": 12, "skipped": 0}
    assert report.results["INV"] == {"passed": len(INV_TEMPLATES), "failed": 0, "skipped": 0}
    assert report.results["DIR"]["passed"] + report.results["DIR"]["failed"] == len(DIR_CASES)
    assert report.failed == len(report.failures) == 12 + report.results["DIR"]["failed"]
    assert report.metrics()["checks_MFT_pass_rate"] == 0.25
    assert "expected Business, got Sports" in report.text()


def test_name_sensitive_model_breaks_invariance() -> None:
    report = run_checks(KeywordModel({"Business": ("Federer", "Roger", "men"), "Sports": ("final", "Open")}))
    assert report.results["INV"]["failed"] >= 1
    assert any("Roger Federer -> Business" in f["detail"] for f in report.failures)


def test_directional_failure_and_skipped_topics() -> None:
    # "shares" pulls towards Sports here, so adding the Business sentence lowers P(Business).
    report = run_checks(KeywordModel({"Sports": ("shares",)}, classes=("Sports", "Business")))
    assert any(f["kind"] == "DIR" and "P(Business) fell" in f["detail"] for f in report.failures)
    assert report.results["MFT"]["skipped"] == sum(1 for _, t in MFT_CASES if t not in ("Sports", "Business"))
    assert report.results["DIR"]["skipped"] == 2
