"""Trials whose process died (kill -9, OOM killer, a lost machine) end as FAIL and are retried, never left RUNNING.

Two ways to notice a dead worker:
- same machine: the trial records its process (host, pid, start time); a process that is gone is dead at once;
- any machine: Optuna's heartbeat; a trial whose heartbeat is older than the grace period is stale.
Either way the trial becomes FAIL with a reason, its MLflow run FAILED, and its params are queued once more.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from newscat.processes import Worker, describe

log = logging.getLogger("newscat")

WORKER_ATTR = "worker"
RETRIES = 1  # an interrupted trial is run once more with the same params; a second death fails it for good


class OnInterrupted:
    """Called for every trial failed because its worker died: record why, end its MLflow run, queue a retry."""

    def __init__(self, end_mlflow_run: Callable[[str, str], None]) -> None:
        self.end_mlflow_run = end_mlflow_run

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        reason = interrupted_reason(trial)
        # A FAIL trial takes no more attributes: the reason goes on the study (and on the trial where the failing
        # was ours to do, see below) and on the trial's MLflow run.
        study.set_user_attr(f"interrupted.trial-{trial.number}", reason)
        queued = retry(study, trial)  # first: a tracking store failing below must not lose the retry
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            self.end_mlflow_run(run_id, reason)
        log.warning(
            "trial %d %s; %s", trial.number, reason[len("interrupted: ") :], "queued again" if queued else "not retried"
        )


def retry(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Queue the trial's params once more (as Optuna's RetryHeartbeatStaleTrialCallback does, with the same
    `failed_trial` / `retry_history` system attrs) but without its user attrs: the retry gets its own run and reason.
    Returns False once the trial has been retried `RETRIES` times."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > RETRIES:
        return False
    first = trial.system_attrs.get("failed_trial", trial.number)
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            system_attrs={"failed_trial": first, "retry_history": history},
        )
    )
    return True


def interrupted_reason(trial: FrozenTrial) -> str:
    return f"interrupted: {describe(trial.user_attrs.get(WORKER_ATTR, ''))} stopped while the trial was running"


def fail_dead_workers_trials(
    study: optuna.Study, storage: optuna.storages.BaseStorage, on_interrupted: OnInterrupted
) -> list[int]:
    """Fail the RUNNING trials whose process on this host is gone; returns their numbers. `storage`: the study's
    (`make_storage`), whose public API sets a trial's state, which a study offers only for the trial it runs.

    Trials of live processes, or of other hosts, are left alone (the heartbeat covers other hosts).
    """
    failed = []
    study_id = None
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = Worker.parse(trial.user_attrs.get(WORKER_ATTR, ""))
        if worker is None or not worker.is_gone():
            continue
        if study_id is None:
            study_id = storage.get_study_id_from_name(study.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", interrupted_reason(trial))
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process got there first
        on_interrupted(study, storage.get_trial(trial_id))
        failed.append(trial.number)
    return failed


def retried_trial(trial: optuna.Trial) -> int | None:
    """The number of the interrupted trial that `trial` runs again (`retry`), None for a first run; read with
    Optuna's public RetryFailedTrialCallback.retried_trial_number, from the trial as the study stores it."""
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    with warnings.catch_warnings():  # marked experimental since Optuna 2.8, like the heartbeat it serves
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryFailedTrialCallback.retried_trial_number(frozen)
