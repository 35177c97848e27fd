"""Classification metrics on a split: accuracy, macro-F1, per-class F1 and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy_and_macro_f1(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """The two numbers a trial is judged by."""
    from sklearn.metrics import f1_score

    return {
        "accuracy": float(np.mean(labels == predictions)),
        "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
    }


def classification_metrics(
    labels: Sequence[int], predictions: Sequence[int], label_names: Sequence[str]
) -> dict[str, float]:
    """Accuracy, macro-F1 and per-class precision / recall / F1, keyed for MLflow metrics."""
    from sklearn.metrics import precision_recall_fscore_support

    labels, predictions = np.asarray(labels), np.asarray(predictions)
    metrics = accuracy_and_macro_f1(labels, predictions)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=range(len(label_names)), zero_division=0
    )
    for i, name in enumerate(label_names):
        key = metric_key(name)
        metrics[f"precision_{key}"] = float(precision[i])
        metrics[f"recall_{key}"] = float(recall[i])
        metrics[f"f1_{key}"] = float(f1[i])
    return metrics


def confusion(labels: Sequence[int], predictions: Sequence[int], n_classes: int) -> list[list[int]]:
    """Rows: true class; columns: predicted class."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(labels, predictions, labels=range(n_classes)).tolist()


def metric_key(name: str) -> str:
    """A class name made safe for an MLflow metric key (`Sci/Tech` -> `Sci_Tech`)."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)
