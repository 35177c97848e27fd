"""The gated move of a registered version from one alias to another (`newscat promote`, `promote=auto`)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from newscat.evaluation.report import Predictions
from newscat.names import ROLE_TAG, Role
from newscat.registry.evaluations import load_test_split, log_scored_path, score
from newscat.registry.gate import GateDecision, decide
from newscat.registry.tags import VersionTags
from newscat.registry.versions import (
    RegistryError,
    alias_version,
    model_id_of,
    move_alias,
    version_by_alias,
    version_by_number,
)
from newscat.tracking.evaluations import log_evaluation
from newscat.tracking.limits import TAG_VALUE_LIMIT
from newscat.tracking.models import logged_tags
from newscat.tracking.runs import log_metrics, start_evaluation_run, start_nested_evaluation_run

log = logging.getLogger("newscat")
PROMOTIONS_EXPERIMENT = "newscat-promotions"
GATE_MODEL_TAG, GATE_ALIAS_TAG = "gate.registered_model", "gate.to_alias"  # which model and alias a decision is about
SERVING_DEFAULT_TAG = "newscat.serving.default"  # on a release's LoggedModel: the path its serving gate chose


class AlreadyHeld(RegistryError):
    """The alias to move already points at the challenger (another process's gate moved it)."""


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
    min_accuracy: float = 0.0,
    max_drop: float | None = None,
    force: bool = False,
    reason: str = "",
    seed: int = 42,
    scored: Predictions | None = None,
    move: bool = True,
) -> PromotionResult:
    """Score both versions on the same test rows, decide with `gate.decide`, move the alias if it passes (or forced).

    The challenger is `version` or the version `from_alias` points at. `scored` may hold its predictions already
    made on that data (the main job has them). `move=False` records the decision and moves nothing (one of several
    gates a move needs). `max_drop` makes the gate a guard against regression (see `gate.decide`).
    """
    challenger = version_by_number(name, version) if version else version_by_alias(name, from_alias)
    champion = alias_version(name, to_alias)
    if champion is not None and str(champion.version) == str(challenger.version):
        raise AlreadyHeld(f"{name}@{to_alias} is already version {challenger.version}")
    attacking, defending = _score_both(name, challenger, champion, source, seed, scored)
    decision = decide(
        attacking,
        defending,
        challenger_version=str(challenger.version),
        champion_version=str(champion.version) if champion else None,
        metric=metric,
        margin=margin,
        alpha=alpha,
        min_accuracy=min_accuracy,
        max_drop=max_drop,
    )
    moved, forced = move and (decision.passed or force), move and force and not decision.passed
    run_id = _record(name, decision, attacking, defending, forced=forced, to_alias=to_alias)
    if moved:
        why = reason or decision.reason
        if forced:
            why = f"forced past the gate ({decision.reason}): {reason or 'no reason given'}"
        move_alias(name, to_alias, str(challenger.version), reason=why, forced=forced, evidence=run_id)
    return PromotionResult(decision, moved, forced, run_id)


def _score_both(
    name: str,
    challenger: ModelVersion,
    champion: ModelVersion | None,
    source: str | None,
    seed: int,
    scored: Predictions | None,
) -> tuple[Predictions, Predictions | None]:
    """Both versions' predictions on the same test rows: the data the challenger was trained on, or `source`."""
    pinned = VersionTags.from_tags(challenger.tags)
    data = pinned.data_config(source)
    if data is None:
        raise RegistryError(f"{name} version {challenger.version} records no data source; pass --data")
    # On the challenger's own data, the rows must be the test split it recorded: else they may be training rows.
    news, record = load_test_split(data, seed, pinned=pinned, label=f"{name} version {challenger.version}")
    if scored is None or scored.data.get("digest") != record["digest"]:
        scored = score(f"models:/{name}/{challenger.version}", news, record)
    scored = _with_release_path(scored, f"models:/{name}/{challenger.version}")
    defending = score(f"models:/{name}/{champion.version}", news, record) if champion else None
    return scored, defending


def _with_release_path(scored: Predictions, model_uri: str) -> Predictions:
    """The release's own test predictions (the main job hands them in: its build scored them on the recorded default,
    never with an override) with that path in their data record, as `score` records it."""
    if "scored_path" in scored.data:
        return scored
    model_id = model_id_of(model_uri)
    # The gate's decision, a tag of the LoggedModel; a model logged before the ONNX gate serves torch fp32.
    path = logged_tags(model_id).get(SERVING_DEFAULT_TAG, "torch/fp32") if model_id else "unknown"
    engine = f"{path.replace('/', ' ')} on cpu: the release build, on the recorded default {path}"
    return dataclasses.replace(scored, data={**scored.data, "scored_path": path, "scored_engine": engine})


def _record(
    name: str,
    decision: GateDecision,
    attacking: Predictions,
    defending: Predictions | None,
    *,
    forced: bool,
    to_alias: str = "champion",
) -> str:
    """The decision's run in `newscat-promotions`; each version's scores also go to its own LoggedModel, linked to
    the test set's digest (the champion's in a nested run). Returns the decision's run id."""
    challenger_uri = f"models:/{name}/{decision.challenger}"
    with start_evaluation_run(challenger_uri, experiment=PROMOTIONS_EXPERIMENT) as run:
        log_gate_decision(decision, forced=forced)
        mlflow.set_tags({GATE_MODEL_TAG: name, GATE_ALIAS_TAG: to_alias})
        log_evaluation(attacking, decision.challenger_metrics, model_id=model_id_of(challenger_uri))
        log_scored_path(attacking.data)
        if defending is not None:
            champion_uri = f"models:/{name}/{decision.champion}"
            with start_nested_evaluation_run(champion_uri):
                log_evaluation(defending, decision.champion_metrics, model_id=model_id_of(champion_uri))
                log_scored_path(defending.data)
    return run.info.run_id


def earlier_gate(name: str, version: str, to_alias: str = "champion") -> str | None:
    """How an earlier process's gate ended for `version` of `name` facing `to_alias`, when it ended: "moved" (it holds
    or held `to_alias`) or "refused" (a finished decision run refused it); None when the gate has still to run (it
    never ran, or a passing decision was cut short before the move)."""
    found = version_by_number(name, version)
    if found.tags.get(f"moved_to.{to_alias}") or to_alias in (found.aliases or []):
        return "moved"
    client = MlflowClient()
    experiment = client.get_experiment_by_name(PROMOTIONS_EXPERIMENT)
    if experiment is None:
        return None
    decisions = client.search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.`{GATE_MODEL_TAG}` = '{name}' and tags.`{GATE_ALIAS_TAG}` = '{to_alias}' and "
            f"tags.`gate.challenger` = '{version}' and tags.`gate.passed` = 'false' and attributes.status = 'FINISHED'"
        ),
        max_results=1,
    )
    return "refused" if decisions else None


def log_gate_decision(decision: GateDecision, *, forced: bool) -> None:
    """A promotion decision in the active run: both versions' metrics, McNemar's counts and p, the verdict."""
    metrics = {f"challenger_{k}": v for k, v in decision.challenger_metrics.items() if k in ("accuracy", "macro_f1")}
    metrics |= {f"champion_{k}": v for k, v in decision.champion_metrics.items() if k in ("accuracy", "macro_f1")}
    metrics |= {
        "mcnemar_only_challenger_right": decision.only_challenger_right,
        "mcnemar_only_champion_right": decision.only_champion_right,
        "mcnemar_p_value": decision.p_value,
        "gate_passed": float(decision.passed),
        "gate_min_accuracy": decision.min_accuracy,
    }
    if decision.baseline_accuracy is not None:
        metrics["baseline_accuracy"] = decision.baseline_accuracy
    log_metrics(metrics)
    mlflow.log_text(decision.table() + "\n", "gate/comparison.txt")
    mlflow.set_tags(
        {
            ROLE_TAG: Role.PROMOTION,
            "gate.challenger": decision.challenger,
            "gate.champion": decision.champion or "",
            "gate.passed": str(decision.passed).lower(),
            "gate.forced": str(forced).lower(),
            "gate.reason": decision.reason[:TAG_VALUE_LIMIT],
            "gate.min_accuracy": str(decision.min_accuracy),
            "gate.dataset_digest": str(decision.data.get("digest", "")),
            "gate.kind": "improvement" if decision.max_drop is None else f"guard (max drop {decision.max_drop})",
            "gate.challenger_path": decision.challenger_path,  # each version's recorded serving path, as scored
            "gate.champion_path": decision.champion_path,
        }
    )
