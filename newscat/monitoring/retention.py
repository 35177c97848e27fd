"""Trace retention: delete a served model's traces older than a window, keeping the true labels given on them.

Deleting a trace deletes the expectations on it, and with them the labels a desk gave. So before each chunk of
traces is deleted, its labelled rows (trace id, row, the answer as traced, the text where the trace or the feedback
kept it, the true label, who gave it and when, the served model) are written as a Parquet part of a `kept-labels`
run in the traces' experiment; only then are exactly those traces deleted, `CHUNK` at a time (a store deletes in one
transaction, and a crash between chunks leaves at most one chunk kept but not yet deleted: kept again next time,
read once: `kept_labels` drops repeats). `newscat retrain` reads the kept labels beside the live ones.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from newscat.config import ConfigError, window_seconds
from newscat.errors import NewscatError
from newscat.monitoring.feedback import EXPECTATION_PREFIX, TEXT_METADATA
from newscat.monitoring.live import experiment_id_of, experiment_name, traces_experiment_id
from newscat.monitoring.monitor import resolve_version
from newscat.names import ROLE_TAG, Role
from newscat.registry.versions import version_model_id
from newscat.serving.tracing import MODEL_ID_METADATA, REGISTERED_VERSION_TAG, SPAN_NAME

log = logging.getLogger("newscat")
CHUNK = 100  # traces read, kept and deleted per step
KEPT_BEFORE_TAG = "newscat.kept_before_ms"
KEPT_DIR = "kept_labels"
# The columns of a kept row; `text` is None where neither the trace nor the feedback kept it.
KEPT_COLUMNS = (
    "trace_id",
    "row",
    "timestamp_ms",
    "model_id",
    "registered_version",
    "text",
    "sha256",
    "predicted_label",
    "score",
    "probabilities",  # JSON: class -> probability, as traced
    "true_label",
    "label_source",
    "label_time_ms",
)


class RetentionError(NewscatError):
    """Traces that could not be pruned as asked (nothing is deleted before its labels are kept)."""


@dataclass(frozen=True)
class PruneOutcome:
    deleted: int
    kept_labels: int
    experiment: str
    kept_run_id: str = ""  # the run holding the kept labels ("" when there were none)

    def text(self, older_than: str) -> str:
        kept = (
            f"; the {self.kept_labels} true labels on them kept first (run {self.kept_run_id}, {KEPT_DIR}/)"
            if self.kept_labels
            else ""
        )
        return f"deleted {self.deleted} traces of experiment {self.experiment!r} older than {older_than}{kept}"


def prune_traces(
    older_than: str, *, target: str = "", experiment: str = "", chunk: int = CHUNK, now_ms: int | None = None
) -> PruneOutcome:
    """Delete the traces started before `older_than` (90d, 12h, 30m) in `experiment`, or else in the experiment of
    the model `target` (NAME@ALIAS or NAME/VERSION) points at, where the server traces by default; their true labels
    are kept first (`kept_labels` reads them)."""
    if not target and not experiment:
        raise ConfigError("name the model (NAME@ALIAS) whose experiment holds the traces, or --experiment")
    if chunk < 1:
        raise ConfigError(f"chunk must be at least 1 trace, got {chunk}")
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    cutoff_ms = now_ms - window_seconds(older_than) * 1000
    if experiment:
        experiment_id = experiment_id_of(experiment)
        if experiment_id is None:
            raise ConfigError(f"no experiment {experiment!r} in the tracking store")
    else:
        model_id = version_model_id(resolve_version(target))
        if not model_id:
            raise ConfigError(f"{target} is not linked to a LoggedModel: name the traces' --experiment")
        experiment_id = traces_experiment_id("", model_id)
        experiment = experiment_name(experiment_id)
    client = MlflowClient()
    deleted, kept, run_id, part = 0, 0, "", 0
    while True:
        # Always the first page: the traces read before are gone, so the next ones come first.
        traces = list(
            client.search_traces(
                locations=[experiment_id],
                filter_string=f"trace.timestamp_ms < {cutoff_ms}",
                max_results=chunk,
                order_by=["timestamp_ms ASC"],
            )
        )
        if not traces:
            break
        rows = [row for trace in traces for row in labelled_rows(trace)]
        if rows:
            run_id = run_id or _kept_run(client, experiment_id, cutoff_ms, older_than)
            part += 1
            _write_part(client, run_id, part, rows)
            kept += len(rows)
        ids = [trace.info.trace_id for trace in traces]
        gone = int(client.delete_traces(experiment_id, trace_ids=ids) or 0)
        if gone == 0:  # the store deleted none of them: reading them again would loop for ever
            raise RetentionError(
                f"the store deleted none of {len(ids)} traces older than {older_than} in {experiment!r} "
                f"({deleted} deleted before); their labels are kept in run {run_id or '(none needed)'}"
            )
        deleted += gone
        log.info("deleted %d traces (%d so far), %d true labels kept", gone, deleted, kept)
    if run_id:
        client.log_metric(run_id, "kept_labels", kept)
        client.log_metric(run_id, "deleted_traces", deleted)
        client.set_terminated(run_id)
    return PruneOutcome(deleted, kept, experiment, run_id)


def labelled_rows(trace: Any) -> list[dict[str, Any]]:
    """The rows of one newscat trace that hold a valid true label, as `KEPT_COLUMNS` (none: no labels, or not a
    newscat prediction trace)."""
    truth = {
        a.name: a
        for a in trace.info.assessments or []
        if a.name.startswith(EXPECTATION_PREFIX) and a.expectation is not None and a.valid is not False
    }
    span = next((s for s in trace.data.spans if s.name == SPAN_NAME), None)
    outputs = span.outputs if span is not None else None
    if not truth or not isinstance(outputs, Mapping) or not isinstance(outputs.get("predictions"), list):
        return []
    metadata = trace.info.request_metadata or {}
    rows = []
    for record in outputs["predictions"]:
        label = truth.get(f"{EXPECTATION_PREFIX}[{record.get('row')}]")
        if label is None:
            continue
        rows.append(
            {
                "trace_id": trace.info.trace_id,
                "row": int(record["row"]),
                "timestamp_ms": int(trace.info.request_time),
                "model_id": metadata.get(MODEL_ID_METADATA, ""),
                "registered_version": trace.info.tags.get(REGISTERED_VERSION_TAG, ""),
                "text": record.get("text") or (label.metadata or {}).get(TEXT_METADATA),
                "sha256": record.get("sha256", ""),
                "predicted_label": record.get("label", ""),
                "score": float(record.get("score", float("nan"))),
                "probabilities": json.dumps(record.get("probabilities", {})),
                "true_label": str(label.expectation.value),
                "label_source": label.source.source_id if label.source else "",
                "label_time_ms": int(label.create_time_ms or 0),
            }
        )
    return rows


def kept_labels(experiment_id: str, model_id: str, since_ms: int, until_ms: int) -> pd.DataFrame:
    """The true labels that `prune_traces` kept for the model's answers between `since_ms` and `until_ms` (columns
    `KEPT_COLUMNS`), one row per (trace, row): the latest label where a prune was rerun after a crash."""
    client = MlflowClient()
    query = f"tags.`{ROLE_TAG}` = '{Role.KEPT_LABELS}'"
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=query, max_results=500, page_token=token)
        # A run kept only traces started before its cutoff: one whose cutoff precedes the window holds none of it.
        runs += [run for run in page if int(run.data.tags.get(KEPT_BEFORE_TAG, "0")) > since_ms]
        token = page.token
        if not token:
            break
    frames = []
    for run in runs:
        with tempfile.TemporaryDirectory(prefix="newscat-kept-") as tmp:
            local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=KEPT_DIR, dst_path=tmp)
            frames += [pd.read_parquet(path) for path in sorted(Path(local).glob("*.parquet"))]
    if not frames:
        return pd.DataFrame(columns=list(KEPT_COLUMNS))
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[
        (rows["model_id"] == model_id) & (rows["timestamp_ms"] >= since_ms) & (rows["timestamp_ms"] <= until_ms)
    ]
    rows = rows.sort_values("label_time_ms").drop_duplicates(["trace_id", "row"], keep="last")
    return rows.sort_values(["timestamp_ms", "trace_id", "row"]).reset_index(drop=True)


def _kept_run(client: MlflowClient, experiment_id: str, cutoff_ms: int, older_than: str) -> str:
    """A run of its own (made by id: an MLFLOW_RUN_ID of `mlflow run` is not taken over) to hold the kept labels."""
    run = client.create_run(
        experiment_id,
        run_name=f"kept-labels-{cutoff_ms}",
        tags={ROLE_TAG: Role.KEPT_LABELS, KEPT_BEFORE_TAG: str(cutoff_ms), "newscat.older_than": older_than},
    )
    return run.info.run_id


def _write_part(client: MlflowClient, run_id: str, part: int, rows: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory(prefix="newscat-kept-") as tmp:
        path = Path(tmp) / f"part-{part:05d}.parquet"
        pd.DataFrame(rows, columns=list(KEPT_COLUMNS)).to_parquet(path, index=False)
        client.log_artifact(run_id, str(path), KEPT_DIR)
