"""The release build: the serving paths gated and the lexical companion fitted, every choice made on validation or
unlabelled training texts (never on test), and the training reference monitoring compares live traffic with."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from newscat.export.gate import AGREEMENT_TEXTS, GateTexts
from newscat.export.package import ServingBuild, add_lexical, gate_serving_paths
from newscat.export.reference import features_of_answers
from newscat.release.companion import Companion, build_companion
from newscat.release.context import ReleaseContext
from newscat.serving.inputs import CHARS_PER_TOKEN_CAP

log = logging.getLogger("newscat")


@dataclass(frozen=True)
class Built:
    """The build that answers as the served model will, the companion fitted for it (None: `model.lexical` is
    off), and the gate's texts (chosen once: the training reference reuses them)."""

    build: ServingBuild
    companion: Companion | None
    gate: GateTexts


def build_release(ctx: ReleaseContext, model_dir: Path) -> Built:
    """ONNX graphs and the serving-path gate (validation accuracy, agreement on validation and unlabelled training
    texts), then the companion fitted on the final rows with its share chosen on validation against the default
    path; returns the build that answers as the served model will."""
    gate = gate_texts(ctx)
    gated = gate_serving_paths(model_dir, gate, ctx.cfg.model.serving_paths)
    companion = fit_companion(ctx, gated.validation)
    if companion is not None and companion.choice.kept:
        add_lexical(model_dir, companion.model)
    return Built(ServingBuild.load(model_dir, gated), companion, gate)


def final_rows(ctx: ReleaseContext) -> pd.DataFrame:
    """The training rows the final weights were trained on (the refit's, or the trials')."""
    cfg, data = ctx.cfg, ctx.data
    return data.refit_rows(cfg.train.refit_samples, seed=cfg.seed) if ctx.final.rows > len(data.train) else data.train


def gate_texts(ctx: ReleaseContext) -> GateTexts:
    """The gate's texts: the validation rows, and up to `AGREEMENT_TEXTS` training texts for label agreement, those
    the final encoder did not see where any are left (else any training texts: agreement needs no unseen ones)."""
    data = ctx.data
    pool = data.train if data.train_pool is None else data.train_pool
    seen = final_rows(ctx)
    unseen = pool[~pool["text"].isin(set(seen["text"]))]
    source, rows = ("training texts the final encoder did not see", unseen) if len(unseen) else ("training texts", seen)
    if len(rows) > AGREEMENT_TEXTS:
        rows = rows.sample(AGREEMENT_TEXTS, random_state=ctx.cfg.seed)
    return GateTexts(
        texts=data.validation["text"].tolist(),
        labels=data.validation["label"].to_numpy(),
        unlabeled=rows["text"].tolist(),
        unlabeled_source=source,
    )


def fit_companion(ctx: ReleaseContext, encoder_validation: np.ndarray) -> Companion | None:
    """The lexical companion, fitted on the final weights' training rows; its share chosen on validation against
    the encoder as served on the gate's default path (None: `model.lexical` is off)."""
    cfg, data = ctx.cfg, ctx.data
    if cfg.model.lexical == "off":
        return None
    rows = final_rows(ctx)
    return build_companion(
        (rows["text"].tolist(), rows["label"].to_numpy()),
        (data.validation["text"].tolist(), data.validation["label"].to_numpy()),
        encoder_validation,
        max_chars=cfg.model.max_length * CHARS_PER_TOKEN_CAP,
        seed=cfg.seed,
    )


@dataclass(frozen=True)
class Reference:
    """The training reference monitoring compares live traffic with, and which texts it was built from."""

    frame: pd.DataFrame
    source: str


def training_reference(ctx: ReleaseContext, built: Built) -> Reference:
    """Features of texts from the training distribution the final encoder did not train on (the validation rows,
    plus the gate's training texts where it did not see them), answered as the served model answers them: their
    confidence is what the model shows on new news of the kind it learned, not on news it memorised. Their labels are
    known here, so it records whether each answer was right: what the label-free accuracy estimate is calibrated on."""
    gate, build = built.gate, built.build
    unseen = gate.unlabeled_source.endswith("did not see")
    texts = gate.texts + (gate.unlabeled if unseen else [])
    pool = ctx.data.train if ctx.data.train_pool is None else ctx.data.train_pool
    label_of = dict(zip(pool["text"], pool["label"], strict=True))
    labels = [int(v) for v in gate.labels] + ([int(label_of.get(t, -1)) for t in gate.unlabeled] if unseen else [])
    source = f"{len(gate.texts)} validation rows" + (f" and {len(gate.unlabeled)} {gate.unlabeled_source}" * unseen)
    log.info("training reference for monitoring: %s, answered on %s", source, build.scorer.choice)
    scores = build.scores(texts)
    scorer = build.scorer
    counts = scorer.encoder.counts(texts, max_chars=scorer.max_length * CHARS_PER_TOKEN_CAP)
    frame = features_of_answers(texts, scores.probabilities, scores.truncated, counts, scorer.label_names, labels)
    return Reference(frame, source)
