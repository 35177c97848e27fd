"""The gated move of a registered version from one alias to another (`newscat promote`, `promote=auto`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow

from newscat.evaluation.report import Predictions
from newscat.registry.evaluations import load_test_split, score
from newscat.registry.gate import GateDecision, decide
from newscat.registry.tags import VersionTags
from newscat.registry.versions import (
    RegistryError,
    alias_version,
    move_alias,
    version_by_alias,
    version_by_number,
)
from newscat.tracking.evaluations import log_evaluation
from newscat.tracking.limits import TAG_VALUE_LIMIT
from newscat.tracking.runs import log_metrics, start_evaluation_run

log = logging.getLogger("newscat")


@dataclass(frozen=True)
class PromotionResult:
    """The gate's decision, whether the alias moved, and the run that holds the evidence."""

    decision: GateDecision
    moved: bool
    forced: bool
    run_id: str


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
    scored: Predictions | None = None,
) -> PromotionResult:
    """Score both versions on the same test rows, decide with `gate.decide`, move the alias if it passes (or forced).

    The challenger is `version` or the version `from_alias` points at. `scored` may hold its predictions already
    made on that data (the main job has them).
    """
    challenger = version_by_number(name, version) if version else version_by_alias(name, from_alias)
    champion = alias_version(name, to_alias)
    if champion is not None and str(champion.version) == str(challenger.version):
        raise RegistryError(f"{name}@{to_alias} is already version {challenger.version}")
    data = VersionTags.from_tags(challenger.tags).data_config(source)
    if data is None:
        raise RegistryError(f"{name} version {challenger.version} records no data source; pass --data")
    news, record = load_test_split(data, seed)
    if scored is None or scored.data.get("digest") != record["digest"]:
        scored = score(f"models:/{name}/{challenger.version}", news, record)
    defending = score(f"models:/{name}/{champion.version}", news, record) if champion else None
    decision = decide(
        scored,
        defending,
        challenger_version=str(challenger.version),
        champion_version=str(champion.version) if champion else None,
        metric=metric,
        margin=margin,
        alpha=alpha,
    )
    moved, forced = decision.passed or force, force and not decision.passed
    with start_evaluation_run(f"models:/{name}/{challenger.version}", experiment="newscat-promotions") as run:
        log_gate_decision(decision, forced=forced)
        log_evaluation(scored, decision.challenger_metrics)
    if moved:
        why = reason or decision.reason
        if forced:
            why = f"forced past the gate ({decision.reason}): {reason or 'no reason given'}"
        move_alias(name, to_alias, str(challenger.version), reason=why, forced=forced, evidence=run.info.run_id)
    return PromotionResult(decision, moved, forced, run.info.run_id)


def log_gate_decision(decision: GateDecision, *, forced: bool) -> None:
    """A promotion decision in the active run: both versions' metrics, McNemar's counts and p, the verdict."""
    metrics = {f"challenger_{k}": v for k, v in decision.challenger_metrics.items() if k in ("accuracy", "macro_f1")}
    metrics |= {f"champion_{k}": v for k, v in decision.champion_metrics.items() if k in ("accuracy", "macro_f1")}
    metrics |= {
        "mcnemar_only_challenger_right": decision.only_challenger_right,
        "mcnemar_only_champion_right": decision.only_champion_right,
        "mcnemar_p_value": decision.p_value,
        "gate_passed": float(decision.passed),
    }
    log_metrics(metrics)
    mlflow.log_text(decision.table() + "\n", "gate/comparison.txt")
    mlflow.set_tags(
        {
            "newscat.role": "promotion",
            "gate.challenger": decision.challenger,
            "gate.champion": decision.champion or "",
            "gate.passed": str(decision.passed).lower(),
            "gate.forced": str(forced).lower(),
            "gate.reason": decision.reason[:TAG_VALUE_LIMIT],
        }
    )
