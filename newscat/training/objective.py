"""The Optuna objective: one tracked training step per trial, its end state mirrored in its MLflow run."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from newscat.names import Role
from newscat.processes import Worker
from newscat.redaction import redact_url
from newscat.tracking.runs import end_trial_run, log_trial_params, start_trial_run
from newscat.training.budget import Budget
from newscat.training.recipe import Recipe
from newscat.training.recovery import WORKER_ATTR, retried_trial
from newscat.training.search_space import suggest_params
from newscat.training.step import log_step, train_step
from newscat.training.study import PruningCallback
from newscat.training.trainer import TrainResult, TrialParams, describe_failure

if TYPE_CHECKING:
    from newscat.training.inputs import StudyInputs

log = logging.getLogger("newscat")


def make_objective(
    inputs: StudyInputs, budget: Budget | None = None, reserve: float = 0.0
) -> Callable[[optuna.Trial], float]:
    """The objective: one training run per trial, tracked as a nested MLflow run.

    `reserve`: training samples the refit after the study may need (the budget keeps time for them).
    """
    return Objective(inputs, budget or Budget(None), reserve)


@dataclass(frozen=True)
class Objective:
    """One trial: a nested run whose end state mirrors Optuna's (COMPLETE, PRUNED, FAIL with the reason)."""

    inputs: StudyInputs
    budget: Budget
    reserve: float = 0.0

    def __call__(self, trial: optuna.Trial) -> float:
        cfg = self.inputs.cfg
        trial.set_user_attr(WORKER_ATTR, Worker.current().tag())  # lets a resume tell a dead process's trial
        retry_of = retried_trial(trial)
        trial_dir = Path(cfg.train.work_dir) / cfg.tune.study_name / f"trial-{trial.number}"
        run = start_trial_run(trial.number, cfg.tune.study_name, retry_of=retry_of)
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        params = None
        try:
            params = suggest_params(trial, self.inputs.space)
            again = f" (retry of interrupted trial {retry_of})" if retry_of is not None else ""
            log.info("trial %d of %d%s: %s", trial.number, cfg.tune.n_trials, again, _short(dataclasses.asdict(params)))
            return self._train(trial, params, trial_dir)
        except optuna.TrialPruned:
            end_trial_run("PRUNED")
            raise
        except BaseException as exc:
            reason = redact_url(describe_failure(exc, params, cfg.model.max_length))  # e.g. a storage URL
            trial.set_user_attr("fail_reason", reason[:1000])
            end_trial_run("FAIL", reason + "\n" + redact_url(traceback.format_exc(limit=5)))
            raise
        finally:
            shutil.rmtree(trial_dir, ignore_errors=True)  # bounded disk: the checkpoint lives in MLflow

    def _train(self, trial: optuna.Trial, params: TrialParams, trial_dir: Path) -> float:
        """Train with the pruner listening, log the trial's model; the trial's value is its best evaluation."""
        inputs, cfg = self.inputs, self.inputs.cfg
        recipe = Recipe.of(cfg, params, number=trial.number, rows=len(inputs.data.train))
        log_trial_params(recipe.run_params(cfg, trial.number))
        pruning = PruningCallback(trial, cfg.train.metric, cfg.train.evals_per_epoch)
        result = train_step(
            inputs,
            params,
            number=trial.number,
            tokenized=inputs.tokenized,
            output_dir=trial_dir,
            deadline=self.budget.tuning_deadline(self.reserve, len(inputs.data.test)),
            callbacks=[pruning],
        )
        self.budget.observe(result.samples_per_second, result.samples_trained)
        _raise_if_pruned(result, pruning)
        model_id = log_step(inputs, result, role=Role.TRIAL, number=trial.number, recipe=recipe)
        trial.set_user_attr("mlflow_model_id", model_id)
        end_trial_run("COMPLETE")
        return result.best_metrics[cfg.train.metric]


def _raise_if_pruned(result: TrainResult, pruning: PruningCallback) -> None:
    """A trial stopped by the pruner, or by the budget before its first evaluation, ends PRUNED."""
    if pruning.pruned_at is not None:
        raise optuna.TrialPruned(f"pruned at epoch {pruning.pruned_at}")
    if not result.best_metrics:
        raise optuna.TrialPruned("stopped by the time budget before its first evaluation")


def _short(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
