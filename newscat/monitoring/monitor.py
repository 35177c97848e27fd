"""`newscat monitor NAME@ALIAS`: is the model an alias points at still fit for the traffic it serves?

It reads the model's traces over the live window, compares their features with the training reference logged at
release (Evidently's drift per feature, the predicted labels included), measures live accuracy on the answers that
received true labels (with a 95% Wilson interval) and what the model's own confidence predicts for the rest, logs
all of it as a run linked to the served LoggedModel, with the trace writers' coverage (how many of the requests
served were traced), and gives a verdict: healthy, unhealthy or not judged (`newscat.monitoring.verdict`, each with
its own exit status; a read that fails is an error, never "nothing there").
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
from newscat.export.reference import features_of_records
from newscat.monitoring.drift import DESCRIBED, DriftResult, drift_problems, measure_drift
from newscat.monitoring.estimate import AccuracyEstimate, ConfidenceCalibration, estimate_accuracy, estimate_problems
from newscat.monitoring.live import (
    LiveWindow,
    experiment_name,
    log_monitoring,
    other_versions_note,
    read_coverage,
    read_live_window,
    read_reference,
    traces_experiment_id,
)
from newscat.monitoring.verdict import Part, Verdict, verdict, verdict_line
from newscat.registry.tags import VersionTags
from newscat.registry.versions import version_by_alias, version_by_number, version_model_id
from newscat.serving.coverage import COVERAGE_EVERY_S, Coverage
from newscat.tracking.models import REFERENCE_TAG, logged_tags

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
    parts: tuple[Part, ...] = ()  # drift, live accuracy, coverage: judged or why not
    coverage: Coverage | None = None  # the trace writers' counts over the window (None: none recorded)
    experiment_name: str = ""  # of the traces, where the monitoring run is logged too
    run_id: str = ""
    config: MonitorConfig = field(default_factory=MonitorConfig)

    @property
    def verdict(self) -> Verdict:
        return verdict(self.parts)

    @property
    def healthy(self) -> bool:
        return self.verdict is Verdict.HEALTHY

    def text(self) -> str:
        return summary(self)


def monitor(target: str, cfg: MonitorConfig, *, now_ms: int | None = None) -> MonitorReport:
    """Judge the model `target` (NAME@ALIAS or NAME/VERSION) on its traces of the last `cfg.since`."""
    version = resolve_version(target)
    model_id = version_model_id(version)
    if not model_id:
        raise MonitorError(f"{target} (version {version.version}) is not linked to a LoggedModel: nothing traces it")
    reference = read_reference(model_id)  # a store that fails raises: only "none logged" is None
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
    coverage = with_window_traces(read_coverage(experiment_id, model_id, window.since_ms, window.until_ms), window)
    answers = window.answers
    live = features_of_records(answers.to_dict("records")) if len(answers) else None
    drift = measure_drift(reference, live) if live is not None and len(live) >= cfg.min_texts else None
    accuracy = live_accuracy(answers, window.label_names, ConfidenceCalibration.from_reference(reference))
    test_accuracy = VersionTags.from_tags(version.tags).test_metrics.get("accuracy")
    parts = judge(cfg, len(answers), drift, accuracy, test_accuracy, coverage)
    problems = tuple(problem for part in parts for problem in part.problems)
    notes = tuple(f"{part.name} not judged: {part.why}" for part in parts if not part.judged)
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
        parts=parts,
        coverage=coverage,
        experiment_name=experiment_name(experiment_id),
        config=cfg,
    )
    run_id = log_monitoring(
        window,
        live if live is not None else features_of_records([]),
        monitor_metrics(report),
        run_name=f"monitor {target} {_utc(now_ms)}",
        tags={
            "newscat.monitored": target,
            "newscat.version": report.version,
            "newscat.healthy": str(report.healthy),
            "newscat.verdict": report.verdict.value,
        },
        artifacts=_artifacts(report),
    )
    return replace(report, run_id=run_id)


def with_window_traces(coverage: Coverage | None, window: LiveWindow) -> Coverage | None:
    """The writers' counts, at most COVERAGE_EVERY_S behind: traces the window holds beyond the traced count were
    served and traced since the last record, and count as such (a lagging record never reads as lost traffic)."""
    if coverage is None or window.traces <= coverage.traced:
        return coverage
    # Pending at the last record (counted served, not yet traced) first; beyond that, served since.
    served = max(coverage.served, coverage.not_sampled + window.traces + coverage.lost)
    return replace(coverage, served=served, traced=window.traces)


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
    coverage: Coverage | None = None,
) -> tuple[Part, ...]:
    """The parts of the verdict under `cfg` (`newscat.monitoring.verdict`): drift, live accuracy and coverage, each
    judged on enough evidence or saying why not, with what it found wrong."""
    return (
        _drift_part(cfg, texts, drift, accuracy, test_accuracy),
        _accuracy_part(cfg, accuracy, test_accuracy),
        _coverage_part(cfg, coverage),
    )


def _drift_part(
    cfg: MonitorConfig, texts: int, drift: DriftResult | None, accuracy: LiveAccuracy, test_accuracy: float | None
) -> Part:
    if drift is None:
        return Part("drift", True, False, why=f"{texts} live texts < monitor.min_texts {cfg.min_texts}")
    # A fall in confidence counts by the accuracy it predicts on the unlabelled answers (`estimate`).
    estimate = None
    if accuracy.expected is not None:
        estimate = AccuracyEstimate(accuracy.expected, accuracy.expected_calibrated, accuracy.expected_method)
    problems = drift_problems(drift, cfg.max_drift_share, cfg.prediction_drift)
    problems += estimate_problems(estimate, accuracy.unlabelled, test_accuracy, cfg)
    return Part("drift", True, True, tuple(problems))


def _accuracy_part(cfg: MonitorConfig, accuracy: LiveAccuracy, test_accuracy: float | None) -> Part:
    # Not required: true labels come late or never, and drift alone can be judged without them.
    if accuracy.labelled < cfg.min_labelled:
        why = f"{accuracy.labelled} labelled texts < monitor.min_labelled {cfg.min_labelled}"
        return Part("live accuracy", False, False, why=why)
    floors = [(cfg.min_accuracy, "monitor.min_accuracy")] if cfg.min_accuracy > 0 else []
    if test_accuracy is not None:
        floors.append(
            (
                test_accuracy - cfg.max_accuracy_drop,
                f"test accuracy {test_accuracy:.4f} - monitor.max_accuracy_drop {cfg.max_accuracy_drop:g}",
            )
        )
    problems = tuple(
        f"live accuracy {accuracy.accuracy:.4f} (95% CI {accuracy.low:.4f}-{accuracy.high:.4f}, "
        f"{accuracy.labelled} labelled) is below {floor:.4f} ({what})"
        for floor, what in floors
        if accuracy.high is not None and accuracy.high < floor
    )
    return Part("live accuracy", False, True, problems)


def _coverage_part(cfg: MonitorConfig, coverage: Coverage | None) -> Part:
    """Whether the window is the traffic: required once the trace writers recorded coverage (older servers record
    none: that is a note, not a reason to withhold every verdict); it never makes a model unhealthy."""
    if coverage is None:
        why = "the trace writers recorded no coverage in the window (a server older than coverage records?)"
        return Part("coverage", False, False, why=why)
    if coverage.share is None:
        why = f"no traced or lost requests recorded yet (the writers record every {COVERAGE_EVERY_S:.0f} s)"
        return Part("coverage", False, False, why=why)
    if coverage.share < cfg.min_coverage:
        why = (
            f"{coverage.share:.1%} of the requests to trace were traced ({coverage.lost:,} lost of "
            f"{coverage.traced + coverage.lost:,}) < monitor.min_coverage {cfg.min_coverage:.0%}: the window is not "
            "the traffic"
        )
        return Part("coverage", True, False, why=why)
    return Part("coverage", True, True)


def monitor_metrics(report: MonitorReport) -> dict[str, float]:
    """What the monitoring run logs, linked to the live window and the served model."""
    metrics: dict[str, float] = {
        "live_texts": float(len(report.window.answers)),
        "live_traces": float(report.window.traces),
        "live_labelled": float(report.accuracy.labelled),
        "healthy": float(report.healthy),
        "exit_code": float(report.verdict.exit_code),  # 0 healthy, 1 unhealthy, 3 not judged
    }
    for part in report.parts:
        metrics[f"judged_{metric_key(part.name)}"] = float(part.judged)
    if report.coverage is not None:
        covered = report.coverage
        metrics.update(served_requests=covered.served, traced_requests=covered.traced, lost_requests=covered.lost)
        metrics.update(not_sampled_requests=covered.not_sampled)
        if covered.share is not None:
            metrics["coverage"] = covered.share
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
        _coverage_line(report),
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
    lines.append(verdict_line(report.parts))
    if report.run_id:
        lines.append(f"logged: run {report.run_id} in experiment {report.experiment_name!r}")
    return "\n".join(lines)


def _coverage_line(report: MonitorReport) -> str:
    """What the window holds against what was served, by the trace writers' counts."""
    c, traces = report.coverage, report.window.traces
    if c is None:
        return (
            f"coverage: unknown (no trace writer recorded its counts in the window); the window holds {traces:,} traces"
        )
    share = f"{c.share:.1%} of those to trace" if c.share is not None else "none decided yet"
    return (
        f"coverage: {c.served:,} requests served, {c.traced:,} traced, {c.lost:,} lost, {c.not_sampled:,} not sampled, "
        f"{c.pending:,} pending ({share}); the window holds {traces:,} traces"
    )


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
