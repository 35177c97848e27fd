"""The served model's traces over a time window, with the true labels fed back on them, and the monitoring run that
records what `newscat monitor` found (metrics linked to the live window and to the served LoggedModel)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlflow
import pandas as pd
from mlflow.data.digest_utils import compute_pandas_digest
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag, LoggedModelInput
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from newscat.monitoring.feedback import EXPECTATION_PREFIX
from newscat.serving.tracing import CLASSES_TAG, MODEL_ID_METADATA, SPAN_NAME

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
    client = MlflowClient()
    rows: list[dict[str, Any]] = []
    traces, labels, token = 0, (), None
    # What search_traces(model_id=...) filters on, spelled out: it takes no filter_string beside a model_id.
    query = (
        f"request_metadata.`{MODEL_ID_METADATA}` = '{model_id}' AND trace.timestamp_ms >= {since_ms} AND "
        f"trace.timestamp_ms <= {until_ms}"
    )
    while True:
        page = client.search_traces(locations=[experiment_id], filter_string=query, max_results=PAGE, page_token=token)
        for trace in page:
            answered = _answers(trace)
            if answered:
                traces += 1
                rows.extend(answered)
                labels = labels or tuple(json.loads(trace.info.tags.get(CLASSES_TAG, "[]")))
        log.info("read %d traces (%d texts) of model %s", traces, len(rows), model_id)
        token = page.token
        if not token:
            break
    return LiveWindow(experiment_id, model_id, since_ms, until_ms, traces, pd.DataFrame(rows), labels)


def _answers(trace: Any) -> list[dict[str, Any]]:
    """The per-text records of one newscat trace, with true labels (none: not a newscat prediction trace)."""
    span = next((s for s in trace.data.spans if s.name == SPAN_NAME), None)
    outputs = span.outputs if span is not None else None
    if not isinstance(outputs, Mapping) or not isinstance(outputs.get("predictions"), list):
        return []
    truth = {
        a.name: a.expectation.value
        for a in trace.info.assessments or []
        if a.name.startswith(EXPECTATION_PREFIX) and a.expectation is not None and a.valid is not False
    }
    return [
        {
            **{k: v for k, v in record.items() if k != "probabilities"},  # `text` where the server kept texts
            "trace_id": trace.info.trace_id,
            "timestamp_ms": trace.info.request_time,
            "true_label": truth.get(f"{EXPECTATION_PREFIX}[{record['row']}]"),
        }
        for record in outputs["predictions"]
    ]


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
    with mlflow.start_run(experiment_id=window.experiment_id, run_name=run_name) as run:
        context = [InputTag(MLFLOW_DATASET_CONTEXT, LIVE_CONTEXT)]
        MlflowClient().log_inputs(
            run.info.run_id, [DatasetInput(entity, context)], models=[LoggedModelInput(window.model_id)]
        )
        mlflow.set_tags({"newscat.role": "monitor", "newscat.model_id": window.model_id, **tags})
        mlflow.log_metrics(dict(metrics), model_id=window.model_id, dataset=entity)
        for name, text in artifacts.items():
            mlflow.log_text(text, name)
    return run.info.run_id


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


def delete_traces_before(experiment_id: str, before_ms: int) -> int:
    """Delete the experiment's traces (with their spans and true labels) that started before `before_ms`; returns
    how many were deleted."""
    return int(MlflowClient().delete_traces(experiment_id, max_timestamp_millis=before_ms) or 0)
