"""The refit: the best trial's params retrained on more rows, in a nested run whose checkpoint becomes the model."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from newscat.data.tokenize import tokenize_rows
from newscat.names import Role
from newscat.tracking.runs import log_trial_params, run_finished, start_refit_run
from newscat.training.budget import Budget
from newscat.training.recipe import Recipe
from newscat.training.search_space import trial_params
from newscat.training.step import log_step, train_step
from newscat.training.trainer import TrialParams

if TYPE_CHECKING:
    import datasets
    import pandas as pd

    from newscat.training.inputs import StudyInputs

log = logging.getLogger("newscat")


@dataclass(frozen=True)
class FinalWeights:
    """The model the study ends with: its LoggedModel, the run that trained it, and how many rows it saw."""

    model_id: str
    run_id: str
    rows: int
    value: float | None = None  # its validation score on the study's metric (a refit's; None: not measured here)
    cut: bool = False  # a refit the time budget gave fewer epochs than its trial had, or stopped at the deadline


def refit_best(
    inputs: StudyInputs, study: optuna.Study, best: optuna.trial.FrozenTrial, budget: Budget
) -> FinalWeights:
    """Retrain the best trial's params on more rows in a nested `refit` run, whose LoggedModel is the final model.

    Without more rows than the trials saw (or with refit off) the best trial's own checkpoint is used. A refit
    already finished for this trial (an earlier, interrupted process) is reused. Under a time budget the refit runs
    as many epochs as still fit, at most `max_epochs`; a refit the budget cut short is kept only if it scores at
    least the trial's value on validation, else the trial's model is released (the budget must not cost accuracy).
    """
    cfg, data = inputs.cfg, inputs.data
    trial = FinalWeights(best.user_attrs["mlflow_model_id"], best.user_attrs["mlflow_run_id"], len(data.train))
    rows = data.refit_rows(cfg.train.refit_samples, seed=cfg.seed) if cfg.train.refit else data.train
    if len(rows) <= trial.rows:
        return trial
    done = study.user_attrs.get("refit", {})
    if done.get("trial") == best.number and done.get("model_id") and run_finished(done.get("run_id", "")):
        log.info("reusing the refit of trial %d (run %s)", best.number, done["run_id"])
        return FinalWeights(done["model_id"], done["run_id"], int(done["rows"])) if done.get("kept", True) else trial
    trial_values = trial_params(best, inputs.space)
    params = affordable_params(trial_values, budget, len(rows), len(data.test), cfg.train.max_epochs)
    if params is None:
        log.info("time budget: no time left for a refit worth having; using trial %d", best.number)
        return trial
    refit = _train_refit(inputs, best.number, params, rows, budget)
    kept = _refit_kept(refit, best, cut=refit.cut or params.epochs < trial_values.epochs)
    study.set_user_attr(
        "refit",
        {"trial": best.number, "run_id": refit.run_id, "rows": refit.rows, "model_id": refit.model_id, "kept": kept},
    )
    return refit if kept else trial


def _refit_kept(refit: FinalWeights, best: optuna.trial.FrozenTrial, *, cut: bool) -> bool:
    """Whether the refit is the final model: yes, unless the budget cut it short and it scores below its trial on
    validation (then the trial's model is, chosen on validation like every other choice)."""
    if not cut or refit.value is None or best.value is None or refit.value >= best.value:
        return True
    log.info(
        "time budget: the shortened refit scored %.4f on validation, below trial %d's %.4f; the trial's model is "
        "released",
        refit.value,
        best.number,
        best.value,
    )
    return False


def affordable_params(
    params: TrialParams, budget: Budget, n_rows: int, test_rows: int, max_epochs: int
) -> TrialParams | None:
    """Under a time budget: as many epochs as still fit, up to `max_epochs` (the trials' bound, which the tuning
    phase left room for), so that time left over buys epochs; the Trainer's learning-rate schedule is then planned
    over the epochs the refit will actually get. None: under half an epoch fits. No budget: the trial's epochs."""
    affordable = budget.affordable_samples(test_rows)
    if affordable is None:
        return params
    params = dataclasses.replace(params, epochs=min(float(max_epochs), round(affordable / n_rows, 2)))
    return params if params.epochs >= 0.5 else None


def _train_refit(
    inputs: StudyInputs, number: int, params: TrialParams, rows: pd.DataFrame, budget: Budget
) -> FinalWeights:
    """Train and log the refit in its own nested run."""
    cfg = inputs.cfg
    log.info("refit: trial %d's params on %d rows for %s epochs", number, len(rows), params.epochs)
    refit_dir = Path(cfg.train.work_dir) / cfg.tune.study_name / "refit"
    recipe = Recipe.of(cfg, params, number=number, rows=len(rows))
    with start_refit_run(number, cfg.tune.study_name) as run:
        log_trial_params(recipe.run_params(cfg, number))
        try:
            result = train_step(
                inputs,
                params,
                number=number,
                tokenized=datasets_with_train(inputs, tokenize_rows(inputs.tokenizer, rows, cfg.model.max_length)),
                output_dir=refit_dir,
                # Slower than estimated (a busy machine)? Stop after a last evaluation, keep the best one.
                deadline=budget.training_deadline(len(inputs.data.test)),
                average=cfg.train.average_weights,
            )
            model_id = log_step(inputs, result, role=Role.REFIT, number=number, recipe=recipe)
        finally:
            shutil.rmtree(refit_dir, ignore_errors=True)
    value = result.best_metrics.get(cfg.train.metric)
    return FinalWeights(model_id, run.info.run_id, len(rows), value, result.stopped_at_deadline)


def datasets_with_train(inputs: StudyInputs, train: datasets.Dataset) -> datasets.DatasetDict:
    """The study's tokenized splits with another training set."""
    import datasets

    return datasets.DatasetDict({"train": train, "validation": inputs.tokenized["validation"]})
