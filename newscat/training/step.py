"""One train-and-log step, shared by every trial and the refit: train in the active run, then log what it made."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from newscat.tracking.callback import EpochMetricsCallback
from newscat.tracking.models import log_trial_result
from newscat.tracking.runs import set_tags
from newscat.training.trainer import TrainResult, TrialParams, train_classifier

if TYPE_CHECKING:
    import datasets
    from transformers import TrainerCallback

    from newscat.training.inputs import StudyInputs

log = logging.getLogger("newscat")


def train_step(
    inputs: StudyInputs,
    params: TrialParams,
    *,
    number: int,
    tokenized: datasets.DatasetDict,
    output_dir: Path,
    deadline: float | None,
    callbacks: Sequence[TrainerCallback] = (),
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
    )


def log_step(result: TrainResult, what: str) -> None:
    """Log a finished step to the active run: its best metrics and checkpoint, and whether the budget cut it."""
    if result.stopped_at_deadline:
        set_tags({"newscat.stopped_by_budget": f"after {result.epochs_run} epochs"})
        log.info("%s stopped by the time budget after %s epochs", what, result.epochs_run)
    log_trial_result(result.best_metrics, result.best_epoch, result.best_checkpoint)
