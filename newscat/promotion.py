"""On-demand evaluation of any model URI, and the gated move of a registered version from one alias to another."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from newscat import checks, gate, pyfunc, registry, report, tracking
from newscat.config import DataConfig
from newscat.data import NewsData, load_news

log = logging.getLogger("newscat")


@dataclass(frozen=True)
class PromotionResult:
    """The gate's decision, whether the alias moved, and the run that holds the evidence."""

    decision: gate.GateDecision
    moved: bool
    forced: bool
    run_id: str


def data_config_for(name: str, version: Any, source: str | None) -> DataConfig:
    """The data to judge a version on: `source` if given, else the data it was trained on (its tags)."""
    tags = version.tags
    source = source or tags.get("data.source")
    if not source:
        raise registry.RegistryError(f"{name} version {version.version} records no data source; pass --data")
    columns = tuple(tags.get("data.text_columns", "text").split(","))
    return DataConfig(source=source, text_columns=columns, label_column=tags.get("data.label_column", "label"))


def evaluation_data(
    model_uri: str, source: str | None, *, text_columns: tuple[str, ...] | None, label_column: str | None
) -> DataConfig:
    """The data to evaluate `model_uri` on: `source`, else the data a registered version was trained on."""
    version = registry.resolve_version(model_uri)
    if version is None and not source:
        raise registry.RegistryError(f"{model_uri} is not a registered version: pass --data to evaluate it")
    cfg = data_config_for(version.name, version, source) if version is not None else DataConfig(source=source)
    if text_columns:
        cfg = dataclasses.replace(cfg, text_columns=text_columns)
    return dataclasses.replace(cfg, label_column=label_column) if label_column else cfg


def load_test_split(cfg: DataConfig, seed: int) -> tuple[NewsData, dict[str, Any]]:
    """The labelled test split and its record (source, split, digest, rows)."""
    news = load_news(cfg, seed=seed)
    return news, tracking.dataset_record(news.test, cfg.source, "test")


def score(model_uri: str, news: NewsData, record: dict[str, Any]) -> report.Predictions:
    """Load `model_uri` as a pyfunc and score the test split with it."""
    log.info("scoring %s on %d rows of %s", model_uri, len(news.test), record["source"])
    return report.predict_split(pyfunc.load(model_uri), news.test, news.label_names, record)


def evaluate_uri(model_uri: str, cfg: DataConfig, *, seed: int = 42) -> tuple[dict[str, float], str]:
    """Evaluate any model URI on a data source's test split; the report goes to a new run (returned)."""
    news, record = load_test_split(cfg, seed)
    predictions = score(model_uri, news, record)
    metrics = report.report_metrics(predictions)
    with tracking.start_evaluation_run(model_uri) as run:
        tracking.log_evaluation(predictions, metrics)
    registry.link_evaluation(model_uri, run.info.run_id, record["digest"])
    return metrics, run.info.run_id


def check_uri(model_uri: str) -> tuple[checks.CheckReport, str]:
    """Run the behavioural checks on `model_uri`; the report goes to a new run (returned)."""
    report_ = checks.run_checks(pyfunc.load(model_uri))
    with tracking.start_evaluation_run(model_uri) as run:
        tracking.log_checks(report_)
    registry.link_checks(model_uri, run.info.run_id, report_.failed)
    return report_, run.info.run_id


def promote_with_gate(
    name: str,
    *,
    from_alias: str | None = "challenger",
    version: str | None = None,
    to_alias: str = "champion",
    source: str | None = None,
    metric: str = "accuracy",
    margin: float = 0.0,
    alpha: float = 0.05,
    force: bool = False,
    reason: str = "",
    seed: int = 42,
    scored: report.Predictions | None = None,
) -> PromotionResult:
    """Score both versions on the same test rows, decide with `gate.decide`, move the alias if it passes (or forced).

    The challenger is `version` or the version `from_alias` points at. `scored` may hold its predictions already
    made on that data (the main job has them).
    """
    challenger = registry.version_by_number(name, version) if version else registry.version_by_alias(name, from_alias)
    champion = registry.alias_version(name, to_alias)
    if champion is not None and str(champion.version) == str(challenger.version):
        raise registry.RegistryError(f"{name}@{to_alias} is already version {challenger.version}")
    news, record = load_test_split(data_config_for(name, challenger, source), seed)
    if scored is None or scored.data.get("digest") != record["digest"]:
        scored = score(f"models:/{name}/{challenger.version}", news, record)
    defending = score(f"models:/{name}/{champion.version}", news, record) if champion else None
    decision = gate.decide(
        scored,
        defending,
        challenger_version=str(challenger.version),
        champion_version=str(champion.version) if champion else None,
        metric=metric,
        margin=margin,
        alpha=alpha,
    )
    moved, forced = decision.passed or force, force and not decision.passed
    with tracking.start_evaluation_run(f"models:/{name}/{challenger.version}", experiment="newscat-promotions") as run:
        tracking.log_gate_decision(decision, forced=forced)
        tracking.log_evaluation(scored, decision.challenger_metrics)
    if moved:
        why = reason or decision.reason
        if forced:
            why = f"forced past the gate ({decision.reason}): {reason or 'no reason given'}"
        registry.move_alias(
            name, to_alias, str(challenger.version), reason=why, forced=forced, evidence=run.info.run_id
        )
    return PromotionResult(decision, moved, forced, run.info.run_id)
