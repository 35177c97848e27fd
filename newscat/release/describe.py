"""What the release says about its model: the model card, the registered version's tags and the gate's metrics,
each a pure function of its inputs (no MLflow call here: `newscat.release.publish` reads and logs)."""

from __future__ import annotations

from collections.abc import Mapping

from newscat.evaluation.card import CardFacts, model_card
from newscat.evaluation.report import Predictions, per_class_table
from newscat.export.gate import GateDecision
from newscat.export.package import ServingBuild, serving_table
from newscat.registry.tags import VersionTags
from newscat.release.companion import Companion, companion_metrics, companion_table
from newscat.release.context import ReleaseContext
from newscat.release.verify import TestScores

# The gate's agreement counts validation and training texts together: its metric says so and is linked to no split.
AGREEMENT_METRIC_SUFFIX = "_agreement_validation_and_training_texts"


def gate_metrics(decision: GateDecision) -> tuple[dict[str, float], dict[str, float]]:
    """The gate's figures per path, named for what they count: validation accuracy (`*_accuracy`, to be linked to
    the validation set), and, linked to no split, agreement with torch fp32 over the validation and training texts
    together (`*_agreement_validation_and_training_texts`) and the speeds measured on this machine."""
    validation: dict[str, float] = {}
    unlinked: dict[str, float] = {}
    for key, value in decision.metrics().items():
        if key.endswith("_accuracy"):
            validation[key] = value
        elif key.endswith("_agreement"):
            unlinked[key.removesuffix("_agreement") + AGREEMENT_METRIC_SUFFIX] = value
        else:
            unlinked[key] = value
    return validation, unlinked


def companion_scores(ctx: ReleaseContext, companion: Companion | None, test: TestScores) -> dict[str, float]:
    """The encoder alone and the companion alone on the test split (metrics of the release model, to be linked to
    the test set); empty when no companion was fitted."""
    if companion is None or test.lexical is None:
        return {}
    parts = {"encoder": test.encoder, "lexical": test.lexical}
    return companion_metrics(test.predictions.labels, parts, ctx.data.label_names)


def companion_section(companion: Companion | None, scores: Mapping[str, float], served: dict[str, float]) -> str:
    """The card's table comparing the encoder alone and the companion alone with the served model ("": none)."""
    if companion is None or not scores:
        return ""
    return companion_table(companion, dict(scores), served)


def write_card(
    ctx: ReleaseContext,
    predictions: Predictions,
    metrics: dict[str, float],
    build: ServingBuild,
    lexical: str = "",
) -> str:
    """The model card (markdown) of the final model."""
    cfg, data = ctx.cfg, ctx.data
    rows = {"trials' train": len(data.train), "final train": ctx.final.rows, "validation": len(data.validation)}
    return model_card(
        CardFacts(
            registered_model=cfg.registered_model,
            base_model=cfg.model.name,
            data_source=cfg.data.source,
            label_names=data.label_names,
            split_rows={**rows, "test": len(data.test)},
            digests=dict(ctx.digests),
            params=dict(ctx.recipe),
            study=ctx.study_name,
            trial=ctx.trial,
            metrics=metrics,
            per_class=per_class_table(predictions, metrics),
            max_length=cfg.model.max_length,
            serving=serving_table(build.decision, build.gated.onnx_error),
            lexical=lexical,
            served=served_as(build),
        )
    )


def served_as(build: ServingBuild) -> str:
    """What the served model is, for the card: the encoder on its default path, mixed with the lexical companion
    where it won its share on validation (the test scores are this mix's, not the encoder's alone)."""
    encoder = f"the encoder on {build.decision.default}"
    lexical = build.scorer.lexical
    if lexical is None:
        return encoder
    return f"{1 - lexical.weight:.2f} x {encoder} + {lexical.weight:.2f} x the lexical companion"


def version_tags(
    ctx: ReleaseContext, predictions: Predictions, metrics: dict[str, float], weights_sha256: str
) -> VersionTags:
    """Where the new version came from: study, trial, runs, weights digest (as the final LoggedModel recorded it),
    data and test scores."""
    cfg = ctx.cfg
    return VersionTags(
        study=ctx.study_name,
        trial=ctx.trial,
        parent_run_id=ctx.parent_run_id,
        trial_run_id=ctx.trial_run_id,
        weights_run_id=ctx.final.run_id,
        weights_sha256=weights_sha256,
        train_rows=ctx.final.rows,
        data_source=cfg.data.source,
        text_columns=cfg.data.text_columns,
        label_column=cfg.data.label_column,
        train_digest=ctx.digests["train"],
        # Everything that cuts the test split, and its digests: later commands recompute it and compare.
        test_fraction=ctx.data.test_fraction,  # None where the data has a test split of its own: nothing to cut
        test_digest=ctx.digests["test"],
        test_sha256=ctx.records["test"]["sha256"],
        test_rows=ctx.records["test"]["rows"],
        base_model=cfg.model.name,
        seed=cfg.seed,
        test_metrics=metrics,
        evaluations={predictions.data["digest"]: ctx.parent_run_id},
    )
