"""One train-and-log step, shared by every trial and the refit: train in the active run, then log what it made."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from newscat.config import eval_index
from newscat.names import ROLE_TAG, STUDY_TAG, TRIAL_TAG, Role
from newscat.tracking.callback import EpochMetricsCallback
from newscat.tracking.models import log_checkpoint_model, log_model_metrics
from newscat.tracking.runs import log_metrics, set_tags
from newscat.training.recipe import Recipe
from newscat.training.trainer import TrainResult, TrialParams, train_classifier

if TYPE_CHECKING:
    import datasets
    from transformers import TrainerCallback

    from newscat.training.inputs import StudyInputs

log = logging.getLogger("newscat")
MODEL_METRICS = ("eval_accuracy", "eval_macro_f1", "eval_loss")  # a LoggedModel's validation metrics


def train_step(
    inputs: StudyInputs,
    params: TrialParams,
    *,
    number: int,
    tokenized: datasets.DatasetDict,
    output_dir: Path,
    deadline: float | None,
    callbacks: Sequence[TrainerCallback] = (),
    average: bool = False,
) -> TrainResult:
    """Train `params` (seeded by trial `number`), logging each evaluation's metrics to the active run."""
    cfg = inputs.cfg
    return train_classifier(
        inputs.base.fresh(cfg.seed + number),
        inputs.tokenizer,
        tokenized,
        params,
        cfg.train,
        output_dir=output_dir,
        seed=cfg.seed + number,
        callbacks=[EpochMetricsCallback(cfg.train.evals_per_epoch), *callbacks],
        deadline=deadline,
        average=average,
        prefix_cache=inputs.base.prefix_cache(cfg.train.frozen_layers),
    )


def log_step(inputs: StudyInputs, result: TrainResult, *, role: Role, number: int, recipe: Recipe) -> str:
    """Log a finished step in the active run: its best evaluation's metrics, and its best checkpoint as a
    LoggedModel (`trial-N` / `refit-trial-N`) with the params that produced it and its validation metrics linked
    to the validation set. Returns the model id."""
    cfg = inputs.cfg
    if result.stopped_at_deadline:
        set_tags({"newscat.stopped_by_budget": f"after {result.epochs_run} epochs"})
        log.info("%s %d stopped by the time budget after %s epochs", role, number, result.epochs_run)
    log_metrics({**result.best_metrics, "epoch": result.best_epoch or 0}, prefix="best_")
    if result.averaged_metrics is not None:  # the tail average of the weights, scored on validation
        log_metrics(result.averaged_metrics, prefix="averaged_")
        set_tags({"newscat.weights_averaged": "kept" if result.averaged_kept else "not kept: the best evaluation won"})
    step = eval_index(result.best_epoch or 0, cfg.train.evals_per_epoch)
    name = f"trial-{number}" if role == Role.TRIAL else f"refit-trial-{number}"
    model_id = log_checkpoint_model(
        result.best_checkpoint,
        name=name,
        step=step,
        params=recipe.model_params(),
        tags={STUDY_TAG: cfg.tune.study_name, TRIAL_TAG: str(number), ROLE_TAG: role},
        max_length=cfg.model.max_length,
        base_model=cfg.model.name,
    )
    evals = {k: v for k, v in result.best_metrics.items() if k in MODEL_METRICS}
    log_model_metrics(model_id, evals, inputs.records["validation"], step=step)
    set_tags({"newscat.model_id": model_id})
    return model_id
