"""Score a model URI on a test split (`newscat evaluate`, the gate, the main job's final scoring) and run the
behavioural checks (`newscat check`); reports go to a run, and a registered version is linked to it."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import mlflow

from newscat.config import DataConfig
from newscat.data.load import NewsData, load_news
from newscat.evaluation.checks import CheckReport, run_checks
from newscat.evaluation.report import Predictions, predict_split, report_metrics
from newscat.registry.tags import VersionTags
from newscat.registry.versions import RegistryError, link_checks, link_evaluation, model_id_of, resolve_version
from newscat.tracking.datasets import dataset_record, same_source
from newscat.tracking.evaluations import log_checks, log_evaluation
from newscat.tracking.limits import TAG_VALUE_LIMIT
from newscat.tracking.models import load_recorded, scored_path
from newscat.tracking.runs import start_evaluation_run

log = logging.getLogger("newscat")
# Beside the metrics of an evaluation run: the serving path (backend/precision) that made them, and the engine in words
# (device, and why that path: the version's recorded default, or the fallback this machine forced).
SCORED_PATH_TAG, SCORED_ENGINE_TAG = "evaluation.scored_path", "evaluation.scored_engine"


class TestSplitChanged(RegistryError):
    """A version's own data, read as it was, no longer gives the test split the version recorded."""

    __test__ = False  # a name pytest would otherwise collect


ON_OTHER_DATA = "pass --data to score on other data on purpose (it is then not compared with the pinned split)"


def load_test_split(
    cfg: DataConfig, seed: int, *, pinned: VersionTags | None = None, label: str = ""
) -> tuple[NewsData, dict[str, Any]]:
    """The labelled test split and its record (source, split, digest, sha256, rows).

    With `pinned` (the tags of the version `label` names), a split recomputed from that version's own data must be
    the one it recorded: `verify_test_split`.
    """
    news = load_news(cfg, seed=seed)
    record = dataset_record(news.test, cfg.source, "test")
    if pinned is not None:
        verify_test_split(label, pinned, cfg, record)
    return news, record


def reads_own_data(tags: VersionTags, cfg: DataConfig) -> bool:
    """Whether `cfg` reads a version's own data the way it was read (then its test split is the pinned one)."""
    return (
        bool(tags.data_source)
        and same_source(cfg.source, tags.data_source)
        and (cfg.text_columns, cfg.label_column) == (tags.text_columns, tags.label_column)
        and (tags.test_fraction is None or cfg.test_fraction == tags.test_fraction)
    )


def verify_test_split(
    label: str, tags: VersionTags, cfg: DataConfig, record: dict[str, Any], *, remedy: str = ON_OTHER_DATA
) -> bool:
    """Stop with `TestSplitChanged` when the test split recomputed from a version's own data differs from the one
    it recorded. True when verified; False (logged) for other data, or a version that predates the pin."""
    if not reads_own_data(tags, cfg):
        log.info(
            "%s: scoring on %s (%d test rows), not the data it was trained on as it was read: its pinned test split "
            "is not compared",
            label,
            record["source"],
            record["rows"],
        )
        return False
    if not tags.test_digest:
        log.warning(
            "%s records no test split digest (registered before newscat pinned it): the test split recomputed from "
            "%s is not verified",
            label,
            record["source"],
        )
        return False
    differs = record["digest"] != tags.test_digest
    differs |= tags.test_rows is not None and record["rows"] != tags.test_rows
    differs |= bool(tags.test_sha256) and record.get("sha256") != tags.test_sha256
    if differs:
        raise TestSplitChanged(
            f"{label}: its data no longer gives the test split it was tested on. Recorded: "
            f"{_rows(tags.test_rows)}, digest {tags.test_digest}{_sha(tags.test_sha256)}; recomputed now: "
            f"{record['rows']} rows, digest {record['digest']}{_sha(record.get('sha256', ''))}. The split is cut by "
            f"{tags.test_split_inputs()}; the data changed since it was trained. Restore that data, or {remedy}"
        )
    log.info("%s: test split verified, the pinned one (%d rows, digest %s)", label, record["rows"], record["digest"])
    return True


def _rows(rows: int | None) -> str:
    return "row count not recorded" if rows is None else f"{rows} rows"


def _sha(sha256: str) -> str:
    return f", sha256 {sha256[:12]}" if sha256 else ""


def score(model_uri: str, news: NewsData, record: dict[str, Any]) -> Predictions:
    """Load `model_uri` on its recorded serving path (NEWSCAT_* overrides in the environment are not read) and score
    the test split with it; the path and engine go into the predictions' data record."""
    model = load_recorded(model_uri)
    path = scored_path(model)
    engine = path.get("scored_engine", "not a newscat model")
    log.info("scoring %s on %d rows of %s with %s", model_uri, len(news.test), record["source"], engine)
    return predict_split(model, news.test, news.label_names, {**record, **path})


def log_scored_path(data: Mapping[str, Any]) -> None:
    """Tag the active run with the serving path and engine that made its metrics (from a predictions' data)."""
    mlflow.set_tags(
        {
            SCORED_PATH_TAG: str(data.get("scored_path", "not a newscat model")),
            SCORED_ENGINE_TAG: str(data.get("scored_engine", "not recorded"))[:TAG_VALUE_LIMIT],
        }
    )


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
    """Evaluate any model URI on a data source's test split; the report goes to a new run (returned).

    A registered version scored on its own data is scored on its pinned test split or not at all."""
    version = resolve_version(model_uri)
    pinned = VersionTags.from_tags(version.tags) if version is not None else None
    news, record = load_test_split(cfg, seed, pinned=pinned, label=model_uri)
    predictions = score(model_uri, news, record)
    metrics = report_metrics(predictions)
    with start_evaluation_run(model_uri) as run:
        log_evaluation(predictions, metrics, model_id=model_id_of(model_uri))
        log_scored_path(predictions.data)
    link_evaluation(model_uri, run.info.run_id, record["digest"])
    return metrics, run.info.run_id


def check_uri(model_uri: str) -> tuple[CheckReport, str]:
    """Run the behavioural checks on `model_uri`; the report goes to a new run (returned)."""
    model = load_recorded(model_uri)  # the checks' counts become the model's metrics: on its recorded path
    report = run_checks(model)
    with start_evaluation_run(model_uri) as run:
        log_checks(report, model_id=model_id_of(model_uri))
        log_scored_path(scored_path(model))
    link_checks(model_uri, run.info.run_id, report.failed)
    return report, run.info.run_id
