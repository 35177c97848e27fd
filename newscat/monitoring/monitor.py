"""`newscat monitor NAME@ALIAS`: is the model an alias points at still fit for the traffic it serves?

It reads the model's traces over the live window, compares their features with the training reference logged at
release (Evidently's drift per feature, the predicted labels included), measures live accuracy on the answers that
received true labels (with a 95% Wilson interval) and what the model's own confidence predicts for the rest, logs
all of it as a run linked to the served LoggedModel, and says healthy or unhealthy (the exit status).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pandas as pd
from mlflow.entities.model_registry import ModelVersion

from newscat.config import MonitorConfig, window_seconds
from newscat.errors import NewscatError
from newscat.evaluation.metrics import classification_metrics, metric_key
from newscat.monitoring.drift import DESCRIBED, DriftResult, drift_problems, measure_drift
from newscat.monitoring.estimate import AccuracyEstimate, ConfidenceCalibration, estimate_accuracy, estimate_problems
from newscat.monitoring.reference import features_of_records
from newscat.registry.tags import VersionTags
from newscat.registry.versions import version_by_alias, version_by_number, version_model_id
from newscat.tracking.live import (
    LiveWindow,
    log_monitoring,
    other_versions_note,
    read_live_window,
    traces_experiment_id,
)
from newscat.tracking.models import REFERENCE_TAG, logged_reference, logged_tags

Z95 = 1.959964  # the normal quantile of a two-sided 95% interval


class MonitorError(NewscatError):
    """What `newscat monitor` cannot judge: no such model, no reference, no traces experiment."""


@dataclass(frozen=True)
class LiveAccuracy:
    """Accuracy on the answers that received true labels, and what confidence predicts for those that did not."""

    labelled: int
    unlabelled: int
    accuracy: float | None = None
    low: float | None = None  # 95% Wilson interval
    high: float | None = None
    macro_f1: float | None = None
    recall: dict[str, float] = field(default_factory=dict)
    expected: float | None = None  # the accuracy the unlabelled answers' confidence predicts (`estimate`)
    expected_method: str = ""  # how: calibrated on the reference, or the bare mean top-class probability
    expected_calibrated: bool = False


@dataclass(frozen=True)
class MonitorReport:
    target: str
    version: str
    window: LiveWindow
    reference_source: str
    drift: DriftResult | None
    accuracy: LiveAccuracy
    test_accuracy: float | None
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    run_id: str = ""
    config: MonitorConfig = field(default_factory=MonitorConfig)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def text(self) -> str:
        return summary(self)


def monitor(target: str, cfg: MonitorConfig, *, now_ms: int | None = None) -> MonitorReport:
    """Judge the model `target` (NAME@ALIAS or NAME/VERSION) on its traces of the last `cfg.since`."""
    version = resolve_version(target)
    model_id = version_model_id(version)
    if not model_id:
        raise MonitorError(f"{target} (version {version.version}) is not linked to a LoggedModel: nothing traces it")
    reference = logged_reference(model_id)
    if reference is None:
        raise MonitorError(
            f"{target} (version {version.version}) has no training reference: it was released before newscat "
            "recorded one. Retrain or re-release it to monitor drift."
        )
    experiment_id = traces_experiment_id(cfg.experiment, model_id)
    if experiment_id is None:
        raise MonitorError(
            f"no experiment {cfg.experiment!r}: serve with NEWSCAT_TRACING=on (and NEWSCAT_TRACE_EXPERIMENT) first, "
            "or set monitor.experiment to where the server traces"
        )
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    window = read_live_window(experiment_id, model_id, now_ms - window_seconds(cfg.since) * 1000, now_ms)
    answers = window.answers
    live = features_of_records(answers.to_dict("records")) if len(answers) else None
    drift = measure_drift(reference, live) if live is not None and len(live) >= cfg.min_texts else None
    accuracy = live_accuracy(answers, window.label_names, ConfidenceCalibration.from_reference(reference))
    test_accuracy = VersionTags.from_tags(version.tags).test_metrics.get("accuracy")
    problems, notes = judge(cfg, len(answers), drift, accuracy, test_accuracy)
    stale = other_versions_note(experiment_id, version.name, str(version.version), window.since_ms, window.until_ms)
    notes += (stale,) if stale else ()  # a server still answering with another version: said, not judged
    report = MonitorReport(
        target=target,
        version=str(version.version),
        window=window,
        reference_source=logged_tags(model_id).get(REFERENCE_TAG, f"{len(reference)} texts"),
        drift=drift,
        accuracy=accuracy,
        test_accuracy=test_accuracy,
        problems=problems,
        notes=notes,
        config=cfg,
    )
    run_id = log_monitoring(
        window,
        live if live is not None else features_of_records([]),
        monitor_metrics(report),
        run_name=f"monitor {target} {_utc(now_ms)}",
        tags={"newscat.monitored": target, "newscat.version": report.version, "newscat.healthy": str(report.healthy)},
        artifacts=_artifacts(report),
    )
    return replace(report, run_id=run_id)


def resolve_version(target: str) -> ModelVersion:
    """The registered version NAME@ALIAS or NAME/VERSION names."""
    name, at, alias = target.partition("@")
    if at and name and alias:
        return version_by_alias(name, alias)
    name, slash, number = target.partition("/")
    if slash and name and number.isdigit():
        return version_by_number(name, number)
    raise MonitorError(f"monitor takes NAME@ALIAS or NAME/VERSION (e.g. newscat@champion), got {target!r}")


def live_accuracy(
    answers: pd.DataFrame, label_names: tuple[str, ...], calibration: ConfidenceCalibration | None = None
) -> LiveAccuracy:
    """Accuracy (with a 95% Wilson interval), macro-F1 and per-class recall on the labelled answers; on the
    unlabelled ones, the accuracy their confidence predicts (calibrated on the reference where it records
    correctness, else the mean top-class probability)."""
    if answers.empty:
        return LiveAccuracy(0, 0)
    labelled = answers[answers["true_label"].notna()]
    unlabelled = answers[answers["true_label"].isna()]
    estimate = estimate_accuracy(unlabelled["score"].to_numpy(), calibration)
    expected = estimate.value if estimate is not None else None
    method = estimate.method if estimate is not None else ""
    calibrated = estimate is not None and estimate.calibrated
    if labelled.empty:
        return LiveAccuracy(
            0, len(unlabelled), expected=expected, expected_method=method, expected_calibrated=calibrated
        )
    index = {name: i for i, name in enumerate(label_names)}
    truth = labelled["true_label"].map(index).to_numpy()
    predicted = labelled["label"].map(index).to_numpy()
    metrics = classification_metrics(truth, predicted, label_names)
    low, high = wilson(int((truth == predicted).sum()), len(labelled))
    recall = {
        name: metrics[f"recall_{metric_key(name)}"] for name in label_names if (labelled["true_label"] == name).any()
    }
    return LiveAccuracy(
        len(labelled),
        len(unlabelled),
        metrics["accuracy"],
        low,
        high,
        metrics["macro_f1"],
        recall,
        expected,
        method,
        calibrated,
    )


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (sound near 0 and 1 and for small samples, unlike p +- z*se)."""
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def judge(
    cfg: MonitorConfig,
    texts: int,
    drift: DriftResult | None,
    accuracy: LiveAccuracy,
    test_accuracy: float | None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(problems, notes): what makes the model unhealthy under `cfg`, and what could not be judged."""
    problems, notes = [], []
    if drift is None:
        notes.append(f"drift not judged: {texts} live texts < monitor.min_texts {cfg.min_texts}")
    else:
        problems += drift_problems(drift, cfg.max_drift_share, cfg.prediction_drift)
        # A fall in confidence counts by the accuracy it predicts on the unlabelled answers (`estimate`).
        if accuracy.expected is not None:
            estimate = AccuracyEstimate(accuracy.expected, accuracy.expected_calibrated, accuracy.expected_method)
            problems += estimate_problems(estimate, accuracy.unlabelled, test_accuracy, cfg)
    if accuracy.labelled < cfg.min_labelled:
        notes.append(
            f"live accuracy not judged: {accuracy.labelled} labelled texts < monitor.min_labelled {cfg.min_labelled}"
        )
        return tuple(problems), tuple(notes)
    floors = [(cfg.min_accuracy, "monitor.min_accuracy")] if cfg.min_accuracy > 0 else []
    if test_accuracy is not None:
        floors.append(
            (
                test_accuracy - cfg.max_accuracy_drop,
                f"test accuracy {test_accuracy:.4f} - monitor.max_accuracy_drop {cfg.max_accuracy_drop:g}",
            )
        )
    for floor, what in floors:
        if accuracy.high is not None and accuracy.high < floor:
            problems.append(
                f"live accuracy {accuracy.accuracy:.4f} (95% CI {accuracy.low:.4f}-{accuracy.high:.4f}, "
                f"{accuracy.labelled} labelled) is below {floor:.4f} ({what})"
            )
    return tuple(problems), tuple(notes)


def monitor_metrics(report: MonitorReport) -> dict[str, float]:
    """What the monitoring run logs, linked to the live window and the served model."""
    metrics: dict[str, float] = {
        "live_texts": float(len(report.window.answers)),
        "live_traces": float(report.window.traces),
        "live_labelled": float(report.accuracy.labelled),
        "healthy": float(report.healthy),
    }
    if report.drift is not None:
        metrics["drift_share"] = report.drift.share
        for feature in report.drift.features:
            metrics[f"drift_{feature.feature}"] = feature.score
            metrics[f"drifted_{feature.feature}"] = float(feature.drifted)
    acc = report.accuracy
    optional = {
        "live_accuracy": acc.accuracy,
        "live_accuracy_low": acc.low,
        "live_accuracy_high": acc.high,
        "live_macro_f1": acc.macro_f1,
        "expected_accuracy_unlabelled": acc.expected,
    }
    metrics.update({k: float(v) for k, v in optional.items() if v is not None})
    metrics.update({f"live_recall_{metric_key(k)}": v for k, v in acc.recall.items()})
    return metrics


def _artifacts(report: MonitorReport) -> dict[str, str]:
    artifacts = {"monitor/summary.txt": summary(report), "monitor/metrics.json": json.dumps(monitor_metrics(report))}
    if report.drift is not None:
        artifacts["monitor/drift_report.html"] = report.drift.html
    return artifacts


def summary(report: MonitorReport) -> str:
    """One screen: the model and window, drift per feature, live accuracy, the verdict and where it is logged."""
    w, acc = report.window, report.accuracy
    lines = [
        f"newscat monitor: {report.target} = version {report.version} (model {w.model_id})",
        f"window: {_utc(w.since_ms)} -> {_utc(w.until_ms)} UTC (last {report.config.since}); "
        f"{len(w.answers):,} texts in {w.traces:,} traces, {acc.labelled:,} with true labels",
        f"reference: {report.reference_source}",
    ]
    if report.drift is not None:
        lines.append(f"{'feature':<15}{'test':<12}{'p-value':>9}{'alpha/k':>9}{'effect':>8}{'floor':>7}  drifted")
        for f in report.drift.features:
            mark = ("YES" if f.drifted else "no") if f.tested else f"not tested: {DESCRIBED[f.feature]}"
            numbers = f"{f.score:>9.3g}{f.threshold:>9.4f}{f.effect:>8.3f}{f.floor:>7.2f}"
            lines.append(f"{f.feature:<15}{f.method:<12}{numbers}  {mark}")
    if acc.accuracy is not None:
        recall = ", ".join(f"{k} {v:.2f}" for k, v in acc.recall.items())
        lines.append(
            f"live accuracy {acc.accuracy:.4f} (95% CI {acc.low:.4f}-{acc.high:.4f}) on {acc.labelled:,} labelled; "
            f"macro-F1 {acc.macro_f1:.4f}; recall {recall}"
        )
    if report.test_accuracy is not None:
        lines.append(f"test accuracy at release: {report.test_accuracy:.4f}")
    if acc.expected is not None:
        lines.append(
            f"the model's confidence predicts accuracy {acc.expected:.4f} on the {acc.unlabelled:,} unlabelled "
            f"({acc.expected_method})"
        )
    lines.extend(f"note: {n}" for n in report.notes)
    lines.extend(f"UNHEALTHY: {p}" for p in report.problems)
    if report.healthy:
        lines.append("HEALTHY" + (" (within what could be judged)" if report.notes else ""))
    if report.run_id:
        lines.append(f"logged: run {report.run_id} in experiment {report.config.experiment!r}")
    return "\n".join(lines)


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
