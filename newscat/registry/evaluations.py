"""Score a model URI on a test split (`newscat evaluate`, the gate, the main job's final scoring) and run the
behavioural checks (`newscat check`); reports go to a run, and a registered version is linked to it."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from newscat.config import DataConfig
from newscat.data.load import NewsData, load_news
from newscat.evaluation.checks import CheckReport, run_checks
from newscat.evaluation.report import Predictions, predict_split, report_metrics
from newscat.registry.tags import VersionTags
from newscat.registry.versions import RegistryError, link_checks, link_evaluation, model_id_of, resolve_version
from newscat.tracking.datasets import dataset_record
from newscat.tracking.evaluations import log_checks, log_evaluation
from newscat.tracking.models import load_model
from newscat.tracking.runs import start_evaluation_run

log = logging.getLogger("newscat")


def load_test_split(cfg: DataConfig, seed: int) -> tuple[NewsData, dict[str, Any]]:
    """The labelled test split and its record (source, split, digest, rows)."""
    news = load_news(cfg, seed=seed)
    return news, dataset_record(news.test, cfg.source, "test")


def score(model_uri: str, news: NewsData, record: dict[str, Any]) -> Predictions:
    """Load `model_uri` as a pyfunc and score the test split with it."""
    log.info("scoring %s on %d rows of %s", model_uri, len(news.test), record["source"])
    return predict_split(load_model(model_uri), news.test, news.label_names, record)


def evaluation_data(
    model_uri: str, source: str | None, *, text_columns: tuple[str, ...] | None, label_column: str | None
) -> DataConfig:
    """The data to evaluate `model_uri` on: `source`, else the data a registered version was trained on."""
    version = resolve_version(model_uri)
    cfg = VersionTags.from_tags(version.tags).data_config(source) if version is not None else None
    if cfg is None and source:
        cfg = DataConfig(source=source)
    if cfg is None:
        where = "records no data source" if version is not None else "is not a registered version"
        raise RegistryError(f"{model_uri} {where}: pass --data to evaluate it")
    if text_columns:
        cfg = dataclasses.replace(cfg, text_columns=text_columns)
    return dataclasses.replace(cfg, label_column=label_column) if label_column else cfg


def evaluate_uri(model_uri: str, cfg: DataConfig, *, seed: int = 42) -> tuple[dict[str, float], str]:
    """Evaluate any model URI on a data source's test split; the report goes to a new run (returned)."""
    news, record = load_test_split(cfg, seed)
    predictions = score(model_uri, news, record)
    metrics = report_metrics(predictions)
    with start_evaluation_run(model_uri) as run:
        log_evaluation(predictions, metrics, model_id=model_id_of(model_uri))
    link_evaluation(model_uri, run.info.run_id, record["digest"])
    return metrics, run.info.run_id


def check_uri(model_uri: str) -> tuple[CheckReport, str]:
    """Run the behavioural checks on `model_uri`; the report goes to a new run (returned)."""
    report = run_checks(load_model(model_uri))
    with start_evaluation_run(model_uri) as run:
        log_checks(report, model_id=model_id_of(model_uri))
    link_checks(model_uri, run.info.run_id, report.failed)
    return report, run.info.run_id
