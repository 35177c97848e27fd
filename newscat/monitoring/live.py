"""The served model's traces over a time window, with the true labels fed back on them, and the monitoring run that
records what `newscat monitor` found (metrics linked to the live window and to the served LoggedModel)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import mlflow
import pandas as pd
from mlflow.data.digest_utils import compute_pandas_digest
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag, LoggedModelInput, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from newscat.config import MLFLOW_RUN_ENV
from newscat.export.reference import REFERENCE_DIR, REFERENCE_FILE
from newscat.monitoring.feedback import EXPECTATION_PREFIX, LABELLED_TAG, TEXT_METADATA, labels_tagged_since
from newscat.names import ROLE_TAG, Role
from newscat.serving.coverage import METRICS, MODEL_ID_TAG, Coverage
from newscat.serving.tracing import (
    CLASSES_TAG,
    MODEL_ID_METADATA,
    REGISTERED_MODEL_TAG,
    REGISTERED_VERSION_TAG,
    SPAN_NAME,
)
from newscat.tracking.store import TrackingError, raise_failure

log = logging.getLogger("newscat")
PAGE = 500  # traces per search page
LIVE_CONTEXT = "live"
SOURCE_TYPE = "mlflow_traces"


@dataclass(frozen=True)
class LiveWindow:
    """What the served model answered between `since_ms` and `until_ms`: one row per answered text."""

    experiment_id: str
    model_id: str
    since_ms: int
    until_ms: int
    traces: int
    answers: pd.DataFrame  # trace_id, row, timestamp_ms, the trace record's fields, true_label (None: no feedback)
    label_names: tuple[str, ...]

    @property
    def source(self) -> str:
        """Where the window's rows come from, as an MLflow dataset source names it."""
        return (
            f"mlflow-traces:experiment={self.experiment_id};model_id={self.model_id};"
            f"from_ms={self.since_ms};to_ms={self.until_ms}"
        )


class MonitoringReadError(TrackingError):
    """A read the monitor's judgement rests on failed (the store is down or refused it): never "nothing there"."""


READ_FAILED = "Nothing was judged. Make sure the store answers (its log says why the request failed), then rerun."


def read_reference(model_id: str) -> pd.DataFrame | None:
    """The training reference logged beside a model; None only where the model's artifacts hold none (released
    before newscat recorded one). A store that fails to list or send it raises MonitoringReadError."""
    action = f"reading the training reference of model {model_id}"
    try:
        location = MlflowClient().get_logged_model(model_id).artifact_location.rstrip("/")
        # Listed first: only "the folder holds no reference file" means no reference; any failure is an error.
        listed = mlflow.artifacts.list_artifacts(artifact_uri=f"{location}/{REFERENCE_DIR}")
        if not any(posixpath.basename(f.path.rstrip("/")) == REFERENCE_FILE and not f.is_dir for f in listed):
            return None
        with tempfile.TemporaryDirectory(prefix="newscat-reference-") as tmp:
            path = mlflow.artifacts.download_artifacts(f"{location}/{REFERENCE_DIR}/{REFERENCE_FILE}", dst_path=tmp)
            return pd.read_parquet(path)
    except MlflowException as exc:
        raise_failure(exc, action, then=READ_FAILED, error=MonitoringReadError)
    except (OSError, ValueError) as exc:  # an artifact store that failed, or a file that arrived broken
        raise MonitoringReadError(f"{action} failed ({type(exc).__name__}: {exc}). {READ_FAILED}") from exc


def experiment_id_of(name: str) -> str | None:
    experiment = MlflowClient().get_experiment_by_name(name)
    return experiment.experiment_id if experiment is not None else None


def experiment_name(experiment_id: str) -> str:
    return MlflowClient().get_experiment(experiment_id).name


def traces_experiment_id(name: str, model_id: str) -> str | None:
    """The experiment holding the model's traces: the one named, else the LoggedModel's own (the server's default)."""
    return experiment_id_of(name) if name else MlflowClient().get_logged_model(model_id).experiment_id


def read_live_window(experiment_id: str, model_id: str, since_ms: int, until_ms: int | None = None) -> LiveWindow:
    """Every text the model's traces answered in the window, with its valid true label where one was fed back."""
    until_ms = until_ms if until_ms is not None else int(time.time() * 1000)
    rows: list[dict[str, Any]] = []
    traces, labels = 0, ()
    for trace in _traces(experiment_id, _window_query(model_id, since_ms, until_ms)):
        answered = _answers(trace)
        if answered:
            traces += 1
            rows.extend(answered)
            labels = labels or tuple(json.loads(trace.info.tags.get(CLASSES_TAG, "[]")))
    log.info("read %d traces (%d texts) of model %s", traces, len(rows), model_id)
    return LiveWindow(experiment_id, model_id, since_ms, until_ms, traces, pd.DataFrame(rows), labels)


def read_labelled_window(experiment_id: str, model_id: str, since_ms: int, until_ms: int) -> LiveWindow:
    """The texts the model's traces answered in the window that carry a valid true label, and only those: the
    traces `newscat feedback` tagged `LABELLED_TAG`, found by the search itself, spans and labels read page by page;
    no unlabelled trace is read. Each answer's `text` is the trace's, else the one given with its label (None: neither
    kept it). Labels written before feedback tagged traces carry no tag: the window's part before the experiment's
    `LABELLED_SINCE_TAG` (all of it, where the experiment has none) is read whole, as `read_live_window` reads it,
    and its labelled answers kept."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    labels: tuple[str, ...] = ()

    def add(trace: Any) -> None:
        nonlocal labels
        answered = _answers(trace, labelled_only=True)
        if answered and trace.info.trace_id not in seen:
            seen.add(trace.info.trace_id)
            rows.extend(answered)
            labels = labels or tuple(json.loads(trace.info.tags.get(CLASSES_TAG, "[]")))

    window = _window_query(model_id, since_ms, until_ms)
    for trace in _traces(experiment_id, f"{window} AND tags.`{LABELLED_TAG}` = 'true'"):
        add(trace)
    log.info("read %d labelled traces (%d labelled texts) of model %s", len(seen), len(rows), model_id)
    tagged_from = labels_tagged_since(experiment_id)
    untagged_until = until_ms if tagged_from is None else min(until_ms, tagged_from - 1)
    if untagged_until >= since_ms:  # traces labelled, if at all, before feedback tagged them: read whole
        before = len(seen)
        for trace in _traces(experiment_id, _window_query(model_id, since_ms, untagged_until)):
            add(trace)
        log.info(
            "read the traces before %s whole (labels given before `newscat feedback` tagged labelled traces): "
            "%d more labelled traces",
            "the window's end" if tagged_from is None else pd.Timestamp(tagged_from, unit="ms"),
            len(seen) - before,
        )
    columns = ["trace_id", "row", "timestamp_ms", "text", "true_label"]
    answers = pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)
    return LiveWindow(experiment_id, model_id, since_ms, until_ms, len(seen), answers, labels)


def _window_query(model_id: str, since_ms: int, until_ms: int) -> str:
    # What search_traces(model_id=...) filters on, spelled out: it takes no filter_string beside a model_id.
    return (
        f"request_metadata.`{MODEL_ID_METADATA}` = '{model_id}' AND trace.timestamp_ms >= {since_ms} AND "
        f"trace.timestamp_ms <= {until_ms}"
    )


def _traces(experiment_id: str, query: str) -> Iterator[Any]:
    """The traces (with their spans) of the experiment that `query` selects, read `PAGE` at a time."""
    client = MlflowClient()
    token = None
    while True:
        page = client.search_traces(locations=[experiment_id], filter_string=query, max_results=PAGE, page_token=token)
        yield from page
        token = page.token
        if not token:
            break


def read_coverage(experiment_id: str, model_id: str, since_ms: int, until_ms: int) -> Coverage | None:
    """The requests the model's servers answered, traced and lost between `since_ms` and `until_ms`, from the trace
    writers' coverage runs (`newscat.serving.coverage`: running totals, so a window's traffic is each run's total at
    its end minus its total at its start); None where no writer recorded any (a server older than these records, or
    one whose writer never reached the store). A failing store raises MonitoringReadError."""
    client = MlflowClient()
    query = (
        f"tags.`{ROLE_TAG}` = '{Role.TRACE_COVERAGE}' AND tags.`{MODEL_ID_TAG}` = '{model_id}' AND "
        f"attributes.start_time <= {until_ms}"
    )
    runs, token = [], None
    try:
        while True:
            page = client.search_runs([experiment_id], filter_string=query, max_results=PAGE, page_token=token)
            runs += [run for run in page if not run.info.end_time or run.info.end_time >= since_ms]
            token = page.token
            if not token:
                break
        histories = [{key: client.get_metric_history(run.info.run_id, key) for key in METRICS} for run in runs]
    except MlflowException as exc:
        action = f"reading the trace coverage of model {model_id}"
        raise_failure(exc, action, then=READ_FAILED, error=MonitoringReadError)
    if not runs:
        return None
    total = Coverage()
    for history in histories:
        total = total + (_total_at(history, until_ms) - _total_at(history, since_ms - 1))
    return total


def _total_at(history: Mapping[str, list[Any]], timestamp_ms: int) -> Coverage:
    """A coverage run's running totals as they stood at `timestamp_ms` (zero before its first record)."""
    values = {}
    for key, points in history.items():
        before = [p for p in points if p.timestamp <= timestamp_ms]
        values[key] = max(before, key=lambda p: (p.timestamp, p.step)).value if before else 0.0
    return Coverage.from_metrics(values)


def other_versions_traced(experiment_id: str, name: str, version: str, since_ms: int, until_ms: int) -> dict[str, int]:
    """Traces in the window per other registered version of `name` (counted up to PAGE each): a server that loaded
    its files before an alias moved still answers, and traces, with the version it loaded."""
    query = (
        f"tags.`{REGISTERED_MODEL_TAG}` = '{name}' AND tags.`{REGISTERED_VERSION_TAG}` != '{version}' AND "
        f"trace.timestamp_ms >= {since_ms} AND trace.timestamp_ms <= {until_ms}"
    )
    # Only tags are read: no spans downloaded.
    found = MlflowClient().search_traces(
        locations=[experiment_id], filter_string=query, max_results=PAGE, include_spans=False
    )
    counts: dict[str, int] = {}
    for trace in found:
        other = trace.info.tags.get(REGISTERED_VERSION_TAG, "?")
        counts[other] = counts.get(other, 0) + 1
    return counts


def other_versions_note(experiment_id: str, name: str, version: str, since_ms: int, until_ms: int) -> str | None:
    """The warning `newscat monitor` gives when other versions of `name` traced in the window (None: none did):
    what it reads of `version` is then not all the traffic the name answers."""
    counts = other_versions_traced(experiment_id, name, version, since_ms, until_ms)
    if not counts:
        return None
    listed = ", ".join(f"version {v}: {n}{'+' if n >= PAGE else ''} traces" for v, n in sorted(counts.items()))
    note = (
        f"other versions of {name} still answer traffic in this window ({listed}): a server loaded before the alias "
        f"moved serves its old version until restarted; only version {version}'s traces are judged here"
    )
    log.warning("%s", note)
    return note


def _answers(trace: Any, *, labelled_only: bool = False) -> list[dict[str, Any]]:
    """The per-text records of one newscat trace, with true labels (none: not a newscat prediction trace); with
    `labelled_only`, those with a true label alone, their `text` the trace's or else the one given with the label."""
    span = next((s for s in trace.data.spans if s.name == SPAN_NAME), None)
    outputs = span.outputs if span is not None else None
    if not isinstance(outputs, Mapping) or not isinstance(outputs.get("predictions"), list):
        return []
    truth = {
        a.name: a
        for a in trace.info.assessments or []
        if a.name.startswith(EXPECTATION_PREFIX) and a.expectation is not None and a.valid is not False
    }
    answers = []
    for record in outputs["predictions"]:
        label = truth.get(f"{EXPECTATION_PREFIX}[{record['row']}]")
        if labelled_only and label is None:
            continue
        answer = {
            **{k: v for k, v in record.items() if k != "probabilities"},  # `text` where the server kept texts
            "trace_id": trace.info.trace_id,
            "timestamp_ms": trace.info.request_time,
            "true_label": label.expectation.value if label is not None else None,
        }
        if labelled_only and answer.get("text") is None:  # served without texts: the feedback may have carried it
            answer["text"] = (label.metadata or {}).get(TEXT_METADATA)
        answers.append(answer)
    return answers


def log_monitoring(
    window: LiveWindow,
    features: pd.DataFrame,
    metrics: Mapping[str, float],
    *,
    run_name: str,
    tags: Mapping[str, str],
    artifacts: Mapping[str, str],
) -> str:
    """A run in the traces' experiment: the live window as an MLflow dataset (input of the run, linked to the served
    LoggedModel), `metrics` linked to both, `artifacts` (name -> text) and `tags`; returns the run id."""
    # Built as an entity: MLflow's dataset sources know files and URLs, not "these traces" (the source says which).
    entity = DatasetEntity(
        name=f"live-{window.since_ms}-{window.until_ms}",
        digest=compute_pandas_digest(features),
        source_type=SOURCE_TYPE,
        source=window.source,
        schema=json.dumps({"mlflow_colspec": [{"name": c, "type": str(t)} for c, t in features.dtypes.items()]}),
        profile=json.dumps({"num_rows": len(features), "traces": window.traces}),
    )
    # Made by id: under `mlflow run` (MLFLOW_RUN_ID set) start_run(experiment_id=...) resumes the project's run, in
    # the project's experiment, and the report would be logged there. The two runs name each other instead.
    project_run = os.environ.get(MLFLOW_RUN_ENV, "")
    client = MlflowClient()
    run_id = client.create_run(window.experiment_id, run_name=run_name).info.run_id
    # Logged by run id, never made active: start_run(run_id=...) refuses a run outside the caller's active
    # experiment (set_experiment), and the traces' experiment is rarely that one.
    try:
        context = [InputTag(MLFLOW_DATASET_CONTEXT, LIVE_CONTEXT)]
        client.log_inputs(run_id, [DatasetInput(entity, context)], models=[LoggedModelInput(window.model_id)])
        linked = {"newscat.project_run_id": project_run} if project_run else {}
        all_tags = {ROLE_TAG: Role.MONITOR, MODEL_ID_TAG: window.model_id, **linked, **tags}
        client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in all_tags.items()])
        mlflow.log_metrics(dict(metrics), model_id=window.model_id, dataset=entity, run_id=run_id)
        for name, text in artifacts.items():
            client.log_text(run_id, text, name)
    except BaseException:
        with contextlib.suppress(Exception):  # the error that stopped it is the one to see
            client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    if project_run:
        client.set_tag(project_run, "newscat.monitor_run_id", run_id)
    return run_id


def log_live_datasets(run_id: str, window: LiveWindow, train: pd.DataFrame, holdout: pd.DataFrame) -> None:
    """The live rows a retrain learned from and held out, as inputs of its study run, their source the window."""
    inputs = []
    for context, rows in (("live_train", train), ("live_holdout", holdout)):
        entity = DatasetEntity(
            name=f"{context}-{window.since_ms}-{window.until_ms}",
            digest=compute_pandas_digest(rows[["text", "label"]]),
            source_type=SOURCE_TYPE,
            source=window.source,
            profile=json.dumps({"num_rows": len(rows)}),
        )
        inputs.append(DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    MlflowClient().log_inputs(run_id, inputs)
