"""Evaluation reports: metrics, per-class results, calibration, the confusion matrix and the most confident mistakes.

Everything here is computed from one model's predictions on one labelled split; tracking.log_evaluation logs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from newscat.errors import NewscatError
from newscat.evaluation.metrics import classification_metrics, confusion, metric_key

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CALIBRATION_BINS = 15


class ReportError(NewscatError):
    """The model and the data do not fit together (e.g. different classes)."""


@dataclass(frozen=True)
class Predictions:
    """One model's predictions on one labelled split, with the data they came from."""

    texts: list[str]
    labels: np.ndarray  # true class ids
    predicted: np.ndarray  # predicted class ids
    probabilities: np.ndarray  # rows x classes, columns in `label_names` order
    label_names: tuple[str, ...]
    data: dict[str, Any]  # source, split, digest, rows

    def __post_init__(self) -> None:
        # Every report, the gate and McNemar's test pair these arrays row by row and class by class: a mismatch
        # would broadcast or index silently instead of failing.
        rows, classes = len(self.labels), len(self.label_names)
        if classes < 2:
            raise ReportError(f"predictions need at least 2 classes; got {list(self.label_names)}")
        if len(self.texts) != rows or np.shape(self.predicted) != (rows,):
            raise ReportError(f"{len(self.texts)} texts, {rows} labels and {len(self.predicted)} predictions differ")
        if np.shape(self.probabilities) != (rows, classes):
            raise ReportError(
                f"probabilities of shape {np.shape(self.probabilities)} for {rows} rows and {classes} classes"
            )
        for name, ids in (("labels", self.labels), ("predictions", self.predicted)):
            if rows and (int(np.min(ids)) < 0 or int(np.max(ids)) >= classes):
                raise ReportError(f"{name} must be class ids 0-{classes - 1}")

    @property
    def correct(self) -> np.ndarray:
        return self.labels == self.predicted

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)


def predict_split(model: Any, frame: pd.DataFrame, label_names: Sequence[str], data: dict[str, Any]) -> Predictions:
    """Score `frame` (columns text, label) with a loaded pyfunc model."""
    output = model.predict(pd.DataFrame({"text": frame["text"].tolist()}))
    model_classes = set(output["probabilities"].iloc[0]) if len(output) else set(label_names)
    if model_classes != set(label_names):
        raise ReportError(
            f"the model's classes {sorted(model_classes)} differ from the data's {sorted(label_names)}: "
            "evaluate it on data with the classes it was trained on"
        )
    to_id = {name: i for i, name in enumerate(label_names)}
    probabilities = np.array([[row[name] for name in label_names] for row in output["probabilities"]], dtype=float)
    return Predictions(
        texts=frame["text"].tolist(),
        labels=frame["label"].to_numpy(),
        predicted=output["label"].map(to_id).to_numpy(),
        probabilities=probabilities.reshape(len(frame), len(label_names)),
        label_names=tuple(label_names),
        data=dict(data),
    )


def report_metrics(p: Predictions) -> dict[str, float]:
    """Accuracy, macro-F1, per-class precision / recall / F1 / support, and expected calibration error."""
    metrics = classification_metrics(p.labels, p.predicted, p.label_names)
    for i, name in enumerate(p.label_names):
        metrics[f"support_{metric_key(name)}"] = float(np.sum(p.labels == i))
    metrics["ece"] = expected_calibration_error(p.confidence, p.correct)
    return metrics


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """Equal-width confidence bins: rows, mean confidence and accuracy in each (empty bins left out)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        inside = index == b
        if inside.any():
            rows.append(
                {
                    "low": edges[b],
                    "high": edges[b + 1],
                    "rows": int(inside.sum()),
                    "confidence": float(confidence[inside].mean()),
                    "accuracy": float(correct[inside].mean()),
                }
            )
    return pd.DataFrame(rows, columns=["low", "high", "rows", "confidence", "accuracy"])


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = CALIBRATION_BINS) -> float:
    """Sum over bins of (share of rows) x |accuracy - mean confidence|; 0 is perfectly calibrated."""
    if len(confidence) == 0:
        return 0.0
    bins = reliability_bins(np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float), n_bins)
    return float((bins["rows"] / len(confidence) * (bins["accuracy"] - bins["confidence"]).abs()).sum())


def confident_mistakes(p: Predictions, k: int = 25) -> pd.DataFrame:
    """The `k` wrong predictions the model was surest of: text, true label, predicted label, score."""
    wrong = np.flatnonzero(~p.correct)
    order = wrong[np.argsort(-p.confidence[wrong], kind="stable")][:k]
    return pd.DataFrame(
        {
            "text": [p.texts[i] for i in order],
            "true_label": [p.label_names[p.labels[i]] for i in order],
            "predicted_label": [p.label_names[p.predicted[i]] for i in order],
            "score": [round(float(p.confidence[i]), 4) for i in order],
        }
    )


def per_class_table(p: Predictions, metrics: dict[str, float]) -> pd.DataFrame:
    """One row per class: precision, recall, F1, support."""
    return pd.DataFrame(
        [
            {
                "class": name,
                **{m: round(metrics[f"{m}_{metric_key(name)}"], 4) for m in ("precision", "recall", "f1")},
                "support": int(metrics[f"support_{metric_key(name)}"]),
            }
            for name in p.label_names
        ]
    )


def confusion_figure(p: Predictions) -> Figure:
    """The confusion matrix (rows: true class) with counts in the cells."""
    from matplotlib.figure import Figure

    matrix = np.asarray(confusion(p.labels, p.predicted, len(p.label_names)))
    side = max(4.8, 0.42 * len(p.label_names) + 3)  # 20 classes need room for their names and counts
    figure = Figure(figsize=(side + 0.7, side), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    ticks = range(len(p.label_names))
    axes.set_xticks(ticks, p.label_names, rotation=30, ha="right")
    axes.set_yticks(ticks, p.label_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        color = "white" if count > threshold else "black"
        axes.text(col, row, str(count), ha="center", va="center", color=color, fontsize=8 if len(matrix) > 10 else 10)
    axes.set_title(f"Confusion matrix ({p.data.get('split', 'test')}, {len(p.labels)} rows)")
    figure.colorbar(image, ax=axes)
    return figure


def reliability_figure(p: Predictions) -> Figure:
    """Reliability diagram: accuracy against mean confidence per bin, with the diagonal of perfect calibration."""
    from matplotlib.figure import Figure

    bins = reliability_bins(p.confidence, p.correct.astype(float))
    figure = Figure(figsize=(5, 4.5), layout="constrained")
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    axes.bar(bins["low"], bins["accuracy"], width=bins["high"] - bins["low"], align="edge", alpha=0.6, label="accuracy")
    axes.plot(bins["confidence"], bins["accuracy"], marker="o", color="C1", label="accuracy at mean confidence")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence (top-class probability)")
    axes.set_ylabel("accuracy")
    ece = expected_calibration_error(p.confidence, p.correct)
    axes.set_title(f"Reliability diagram, ECE {ece:.4f}")
    axes.legend(loc="upper left")
    return figure


def markdown_summary(p: Predictions, metrics: dict[str, float], per_class: pd.DataFrame, mistakes: pd.DataFrame) -> str:
    """The evaluation as a short markdown page (headline metrics, per-class table, top mistakes)."""
    lines = [
        f"# Evaluation on {p.data.get('source')} [{p.data.get('split')}]",
        f"{p.data.get('rows')} rows, digest `{p.data.get('digest')}`.",
        "",
        f"accuracy {metrics['accuracy']:.4f} · macro-F1 {metrics['macro_f1']:.4f} · ECE {metrics['ece']:.4f}",
        "",
        "| class | precision | recall | F1 | support |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {r['class']} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['support']} |"
            for r in per_class.to_dict("records")
        ),
        "",
        "## Most confident mistakes",
        "| score | true | predicted | text |",
        "| --- | --- | --- | --- |",
        *(
            f"| {r['score']:.4f} | {r['true_label']} | {r['predicted_label']} | {_cell_text(r['text'])} |"
            for r in mistakes.head(10).to_dict("records")
        ),
    ]
    return "\n".join(lines) + "\n"


def _cell_text(text: str, limit: int = 160) -> str:
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
