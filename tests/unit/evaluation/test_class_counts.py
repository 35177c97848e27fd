"""Evaluation for label sets other than AG News': 2 and 20 classes in the reports, the card and the behavioural
checks (whose AG News cases are skipped, with a note saying why)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from newscat.evaluation.card import CardFacts, model_card
from newscat.evaluation.checks import AG_NEWS_TOPICS, run_checks
from newscat.evaluation.report import (
    Predictions,
    ReportError,
    confident_mistakes,
    confusion_figure,
    markdown_summary,
    per_class_table,
    report_metrics,
)
from tests.helpers import KEYWORD_CLASSES

DATA = {"source": "tiny", "split": "test", "digest": "d", "rows": 0}


class ConstantModel:
    """Answers every text with the same distribution over `classes`."""

    def __init__(self, classes: tuple[str, ...]) -> None:
        self.classes = classes

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        weights = np.linspace(1, 2, len(self.classes))
        probabilities = dict(zip(self.classes, weights / weights.sum(), strict=True))
        label = max(probabilities, key=probabilities.get)
        row = {"label": label, "score": probabilities[label], "probabilities": probabilities}
        return pd.DataFrame([row] * len(frame))


@pytest.mark.parametrize("n_classes", [2, 20])
def test_checks_on_other_classes_run_no_ag_news_case_and_say_why(n_classes: int) -> None:
    classes = tuple(KEYWORD_CLASSES[n_classes])
    report = run_checks(ConstantModel(classes))
    assert {kind: r["passed"] + r["failed"] for kind, r in report.results.items()} == {"MFT": 0, "INV": 0, "DIR": 0}
    assert report.failed == 0 and report.results["INV"]["skipped"] > 0
    assert report.metrics() == {"checks_MFT_failed": 0.0, "checks_INV_failed": 0.0, "checks_DIR_failed": 0.0}
    assert len(report.notes) == 1 and f"{n_classes} classes" in report.notes[0]
    assert "include none of AG News' topics" in report.text().splitlines()[0]


def test_checks_on_some_ag_news_topics_note_the_missing_ones() -> None:
    report = run_checks(ConstantModel(("Sports", "Business", "Weather")))
    assert report.notes == ["the model lacks AG News topic(s) World, Sci/Tech: the cases expecting them were skipped"]
    assert report.results["INV"]["skipped"] == 0 and "checks_MFT_pass_rate" in report.metrics()
    assert run_checks(ConstantModel(AG_NEWS_TOPICS)).notes == []


def _predictions(n_classes: int, rows: int = 60, seed: int = 0) -> Predictions:
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % n_classes
    logits = rng.normal(size=(rows, n_classes)) + 3 * np.eye(n_classes)[labels]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    names = tuple(KEYWORD_CLASSES[n_classes])
    return Predictions([f"t{i}" for i in range(rows)], labels, probabilities.argmax(axis=1), probabilities, names, DATA)


@pytest.mark.parametrize("n_classes", [2, 20])
def test_reports_have_one_row_and_one_tick_per_class(n_classes: int) -> None:
    p = _predictions(n_classes)
    metrics = report_metrics(p)
    table = per_class_table(p, metrics)
    assert table["class"].tolist() == list(p.label_names) and table["support"].sum() == len(p.labels)
    assert metrics["accuracy"] == pytest.approx(float(p.correct.mean()))
    axes = confusion_figure(p).axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == list(p.label_names)
    summary = markdown_summary(p, metrics, table, confident_mistakes(p))
    assert all(f"| {name} |" in summary for name in p.label_names)


def test_predictions_refuse_probabilities_of_another_shape() -> None:
    p = _predictions(2, rows=4)
    good = {f: getattr(p, f) for f in ("texts", "labels", "predicted", "probabilities", "label_names", "data")}
    bad = {
        "one column": {"probabilities": p.probabilities[:, :1]},
        "another class count": {"probabilities": np.full((4, 3), 1 / 3)},
        "rows": {"probabilities": p.probabilities[:3]},
        "predictions": {"predicted": p.predicted[:3]},
        "labels out of range": {"labels": np.array([0, 1, 2, 1])},
        "one class": {"label_names": ("only",), "probabilities": np.ones((4, 1)), "labels": np.zeros(4, dtype=int)},
    }
    for why, change in bad.items():
        with pytest.raises(ReportError):
            Predictions(**{**good, **change})
            pytest.fail(why)


def _card(label_names: tuple[str, ...]) -> str:
    per_class = pd.DataFrame(
        [{"class": n, "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1} for n in label_names]
    )
    facts = CardFacts(
        registered_model="m",
        base_model="b",
        data_source="reviews.csv",
        label_names=label_names,
        split_rows={"test": 2},
        digests={"test": "d"},
        params={},
        study="s",
        trial=0,
        metrics={"accuracy": 1.0},
        per_class=per_class,
        max_length=64,
    )
    return model_card(facts)


def test_the_card_speaks_of_news_topics_only_for_ag_news_classes() -> None:
    news = _card(AG_NEWS_TOPICS)
    assert "# m: news topic classifier" in news and "Business vs Sci/Tech" in news and "AG News style" in news
    for n_classes in (2, 20):
        card = _card(tuple(KEYWORD_CLASSES[n_classes]))
        assert f"# m: text classifier ({n_classes} classes)" in card
        assert f"to sort texts into {n_classes} classes" in card and "Trained on `reviews.csv` only" in card
        assert not any(word in card for word in ("AG News", "Sci/Tech", "news headlines", "topics"))
