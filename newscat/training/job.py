"""The main job (`newscat tune`): load and tokenize once, run the study, then release the best model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

from newscat.config import Config
from newscat.errors import NewscatError
from newscat.names import TRIAL_TAG
from newscat.registry.promotion import AlreadyHeld, earlier_gate, promote_with_gate
from newscat.release import Release, ReleaseContext, Weights, release_best, resume_release
from newscat.tracking.datasets import log_study_setup
from newscat.tracking.interrupted import end_dead_workers_runs, end_interrupted_run
from newscat.tracking.models import best_model
from newscat.tracking.runs import (
    active_experiment_id,
    claim_study_run,
    create_study_run,
    link_worker_run,
    models_view,
    prepare_store,
    run_exists,
    run_experiment_id,
    start_study_run,
)
from newscat.tracking.store import explain_outages
from newscat.tracking.study_report import log_study_report, log_study_summary
from newscat.training import search_space
from newscat.training import study as studies
from newscat.training.budget import Budget, scoring_speed
from newscat.training.inputs import StudyInputs, prepare
from newscat.training.objective import make_objective
from newscat.training.recipe import logged_recipe
from newscat.training.recovery import OnInterrupted
from newscat.training.refit import FinalWeights, refit_best

if TYPE_CHECKING:
    pass

log = logging.getLogger("newscat")


@dataclass(frozen=True)
class TuneOutcome:
    """What `newscat tune` reports at the end."""

    parent_run_id: str
    best_trial: int | None  # None (and no version) when other workers still run trials: the last one registers
    best_value: float | None
    best_params: dict[str, Any]
    test_metrics: dict[str, float]
    model_uri: str
    registered_model: str
    version: str | None
    ui: str = ""  # the experiment's models in the MLflow UI's model-training view


@explain_outages("newscat tune")  # a store outage anywhere says what to do: rerun, the study resumes
def tune_and_register(cfg: Config) -> TuneOutcome:
    """Run (or resume) the study under one parent run, refit the best params on more rows, evaluate, register.

    With `tune.timeout` the whole job (loading, trials, refit, test scoring) is fitted into that many seconds.
    """
    budget = Budget(cfg.tune.timeout)
    prepare_store()  # first: a refused login or an unreachable server fails before any loading
    inputs = prepare(cfg)
    if budget.seconds is not None:
        _measure_scoring(inputs, budget)
    on_interrupted = OnInterrupted(end_interrupted_run)
    storage = studies.make_storage(cfg.tune, on_interrupted)  # kept: the study lock runs through its database
    study = studies.open_study(
        cfg.tune,
        seed=cfg.seed,
        max_evals=cfg.train.max_epochs * cfg.train.evals_per_epoch,
        n_validation=len(inputs.data.validation),
        on_interrupted=on_interrupted,
        storage=storage,
    )
    with studies.study_lock(
        study.study_name, storage
    ):  # workers starting together agree on one parent run and one warm-start queue
        search_space.enqueue_first_trials(study, inputs.space)
        parent_run_id = _study_run_id(cfg, study)
    with start_study_run(parent_run_id):
        _start_worker(inputs)
        _run_trials(inputs, study, budget)
        running = studies.others_running(study)
        if running:  # the last worker out registers the model, with every trial's result in
            log.info("trials %s still run in other workers; the last of them registers the best model", running)
            return TuneOutcome(parent_run_id, None, None, {}, {}, "", cfg.registered_model, None)
        with studies.study_lock(
            study.study_name, storage
        ):  # two workers finishing together: one registers, the other finds it done
            best = _best_trial(study, parent_run_id, inputs.cfg.train.metric)
            log_study_summary(studies.study_summary(study), best)
            log_study_report(study)
            # Registered by an earlier process: finish it, do not refit.
            release = resume_release(
                registered_model=inputs.cfg.registered_model, trial_run_id=best.user_attrs["mlflow_run_id"]
            )
            if release is None:
                final = refit_best(inputs, study, best, budget)
                release = release_best(_release_context(inputs, study, best, final, parent_run_id))
    _auto_promote(cfg, release)  # after the study's run has ended: the decision gets a run of its own
    return _outcome(parent_run_id, best, release)


def _release_context(
    inputs: StudyInputs, study: optuna.Study, best: optuna.trial.FrozenTrial, final: FinalWeights, parent_run_id: str
) -> ReleaseContext:
    """What the release reads, as plain values: no Optuna object and nothing of training's crosses into it."""
    return ReleaseContext(
        cfg=inputs.cfg,
        data=inputs.data,
        records=inputs.records,
        digests=inputs.digests,
        study_name=study.study_name,
        trial=best.number,
        trial_run_id=best.user_attrs["mlflow_run_id"],
        final=Weights(final.model_id, final.run_id, final.rows),
        parent_run_id=parent_run_id,
        recipe=logged_recipe(final.model_id),  # the final model's own params: a cut refit ran fewer epochs
    )


def _measure_scoring(inputs: StudyInputs, budget: Budget) -> None:
    """Time the release's slowest scoring pass on this machine, so the budget keeps what the test scoring needs
    rather than a guess from the training speed."""
    pad_id = inputs.tokenizer.pad_token_id or 0
    budget.scoring_per_second = scoring_speed(inputs.base.model, inputs.tokenized["validation"]["input_ids"], pad_id)
    if budget.scoring_per_second:
        log.info("time budget %.0f s: scoring runs at %.0f texts/s here", budget.seconds, budget.scoring_per_second)


def _start_worker(inputs: StudyInputs) -> None:
    """In the study's run: claim it, end runs of dead workers, log config and data lineage."""
    claim_study_run()
    left = end_dead_workers_runs(inputs.cfg.tune.study_name)
    if left:
        log.warning("ended %d run(s) left RUNNING by a process that died: FAILED (newscat.fail_reason)", len(left))
    log_study_setup(inputs.cfg, inputs.data)


def _run_trials(inputs: StudyInputs, study: optuna.Study, budget: Budget) -> None:
    """This worker's trials, stopping in time to leave the refit and the test scoring their share of the budget."""
    reserve = _refit_reserve(inputs)
    time_is_up: Callable[[], bool] = lambda: budget.tuning_over(reserve, len(inputs.data.test))  # noqa: E731
    studies.run_trials(study, make_objective(inputs, budget, reserve), inputs.cfg.tune, time_is_up=time_is_up)


def _study_run_id(cfg: Config, study: optuna.Study) -> str:
    """The study's parent run, chosen once: the first worker's run (`mlflow run`'s, or a new `study-<name>` run).

    Later workers and resumes log their trials under it; a later `mlflow run` worker's own run is tagged as a
    worker of that study run. Call under `studies.study_lock`.
    """
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if not (run_id and run_exists(run_id)):
        run_id = create_study_run(cfg)
        study.set_user_attr("mlflow_parent_run_id", run_id)
    link_worker_run(run_id)
    return run_id


def _refit_reserve(inputs: StudyInputs) -> float:
    """Training samples the refit may need (its rows x the most epochs a trial can pick)."""
    train = inputs.cfg.train
    if not train.refit:
        return 0.0
    rows = len(inputs.data.refit_rows(train.refit_samples, seed=inputs.cfg.seed))
    return 0.0 if rows <= len(inputs.data.train) else float(rows * train.max_epochs)


class StudyError(NewscatError):
    """The study cannot produce a model."""


def _best_trial(study: optuna.Study, study_run_id: str, metric: str) -> optuna.trial.FrozenTrial:
    """The trial whose LoggedModel scores best on the validation set (`mlflow.search_logged_models`)."""
    model = best_model(active_experiment_id(), study_run_id, metric)
    if model is None:
        raise StudyError(
            f"study {study.study_name!r} has no complete trial; see the FAILED trial runs' newscat.fail_reason"
        )
    return study.trials[int(model.tags[TRIAL_TAG])]


def _auto_promote(cfg: Config, release: Release) -> None:
    """`promote=auto`: the challenger just registered faces the champion (the outcome is logged, never raised).

    A version an earlier process registered faces it too, unless that process's gate ended (moved or refused): a
    kill between registration and the gate must not skip the gate.
    """
    if cfg.promote.mode != "auto":
        return
    number = str(release.version.version)
    if release.predictions is None:
        earlier = earlier_gate(cfg.registered_model, number)
        if earlier is not None:
            log.info("promote=auto: version %s was registered and gated (%s) by an earlier process", number, earlier)
            return
        log.info("promote=auto: version %s was registered by an earlier process that stopped before the gate", number)
    try:
        result = promote_with_gate(
            cfg.registered_model,
            version=number,  # the version released, whatever holds `challenger` by now
            source=cfg.data.source,
            metric=cfg.promote.metric,
            margin=cfg.promote.margin,
            alpha=cfg.promote.alpha,
            min_accuracy=cfg.promote.min_accuracy,
            seed=cfg.seed,
            scored=release.predictions,
            reason="promote=auto at the end of tuning",
        )
    except AlreadyHeld:  # a worker finishing at the same moment gated it first
        log.info("promote=auto: version %s is champion already", number)
        return
    log.info("promotion gate (run %s):\n%s", result.run_id, result.decision.table())


def _outcome(parent_run_id: str, best: optuna.trial.FrozenTrial, release: Release) -> TuneOutcome:
    version = release.version
    return TuneOutcome(
        parent_run_id=parent_run_id,
        best_trial=best.number,
        best_value=float(best.value),
        best_params=dict(best.params),
        test_metrics=release.test_metrics,
        model_uri=f"models:/{version.name}/{version.version}",
        registered_model=version.name,
        version=str(version.version),
        ui=models_view(run_experiment_id(parent_run_id)),
    )
