"""Evaluation reports and behavioural checks, logged to the active run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import mlflow

from newscat.evaluation import report
from newscat.evaluation.checks import CASES_RECORD
from newscat.evaluation.metrics import confusion
from newscat.names import ROLE_TAG, Role
from newscat.tracking.limits import TAG_VALUE_LIMIT
from newscat.tracking.models import log_model_metrics
from newscat.tracking.runs import log_metrics

if TYPE_CHECKING:
    from newscat.evaluation.checks import CheckReport


def log_evaluation(
    p: report.Predictions, metrics: Mapping[str, float], *, model_id: str | None = None, prefix: str = "test_"
) -> None:
    """An evaluation report in the active run: metrics, per-class table, confusion matrix and reliability PNGs,
    the most confident mistakes, the data it used (under `evaluation/`) and a markdown summary."""
    if model_id:  # the metrics belong to the model, on the dataset they were computed on
        log_model_metrics(model_id, metrics, p.data, prefix=prefix)
    else:
        log_metrics(metrics, prefix=prefix)
    folder = "evaluation"
    per_class = report.per_class_table(p, dict(metrics))
    mistakes = report.confident_mistakes(p)
    mlflow.log_dict(p.data, f"{folder}/data.json")
    mlflow.log_table(per_class, f"{folder}/per_class.json")
    mlflow.log_table(mistakes, f"{folder}/confident_mistakes.json")
    matrix = confusion(p.labels, p.predicted, len(p.label_names))
    mlflow.log_dict({"labels": list(p.label_names), "matrix": matrix}, f"{folder}/confusion_matrix.json")
    mlflow.log_figure(report.confusion_figure(p), f"{folder}/confusion_matrix.png")
    mlflow.log_figure(report.reliability_figure(p), f"{folder}/reliability_diagram.png")
    mlflow.log_text(report.markdown_summary(p, dict(metrics), per_class, mistakes), f"{folder}/report.md")
    source = str(p.data["source"])[:TAG_VALUE_LIMIT]
    mlflow.set_tags({"evaluation.digest": p.data["digest"], "evaluation.source": source})


def log_checks(report_: CheckReport, *, model_id: str | None = None) -> None:
    """Behavioural check results in the active run: pass rates, failure counts, the report and every failure; with
    `model_id`, the metrics also belong to that model, linked to the built-in cases as a dataset."""
    if model_id:
        log_model_metrics(model_id, report_.metrics(), CASES_RECORD)
    else:
        log_metrics(report_.metrics())
    mlflow.log_text(report_.text() + "\n", "checks/report.txt")
    mlflow.log_dict(
        {"results": report_.results, "failures": report_.failures, "notes": list(report_.notes)}, "checks/report.json"
    )
    mlflow.set_tags({ROLE_TAG: Role.CHECKS, "checks.failed": str(report_.failed)})
