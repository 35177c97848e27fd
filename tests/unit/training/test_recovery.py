"""Trials of dead workers end as FAIL (with a reason), their MLflow runs are ended, and they are retried once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from newscat.config import TuneConfig
from newscat.processes import Worker
from newscat.training.recovery import WORKER_ATTR, OnInterrupted, fail_dead_workers_trials, retried_trial
from newscat.training.study import make_storage

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _dead_worker() -> Worker:
    """A real process that has been killed and reaped."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    worker = Worker(Worker.current().host, process.pid, __import__("psutil").Process(process.pid).create_time())
    process.kill()
    process.wait()
    return worker


def test_worker_tags_round_trip_and_tell_live_from_dead() -> None:
    me = Worker.current()
    assert Worker.parse(me.tag()) == Worker(me.host, me.pid, round(me.started, 2))
    assert not Worker.parse(me.tag()).is_gone()
    assert _dead_worker().is_gone()
    assert not Worker("another-machine", 1, 0.0).is_gone()  # other hosts: the heartbeat decides
    assert Worker(me.host, me.pid, me.started - 1000).is_gone()  # same pid, different process (pid reused)
    assert Worker.parse("not a worker tag") is None


def _study(
    tmp_path: Path, on_interrupted: OnInterrupted, heartbeat: int = 0
) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    cfg = TuneConfig(storage=f"sqlite:///{tmp_path}/optuna.db", heartbeat_interval=heartbeat)
    storage = make_storage(cfg, on_interrupted)
    return optuna.create_study(study_name="s", storage=storage, load_if_exists=True), storage


def _running_trial(study: optuna.Study, worker: Worker) -> optuna.trial.FrozenTrial:
    trial = study.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)})
    trial.set_user_attr(WORKER_ATTR, worker.tag())
    trial.set_user_attr("mlflow_run_id", f"run-of-{trial.number}")
    return study.get_trials()[trial.number]


def test_trials_of_dead_local_processes_fail_with_a_reason_and_are_retried(tmp_path: Path) -> None:
    ended: dict[str, str] = {}
    on_interrupted = OnInterrupted(lambda run_id, reason: ended.update({run_id: reason}))
    study, storage = _study(tmp_path, on_interrupted)
    dead = _running_trial(study, _dead_worker())
    _running_trial(study, Worker.current())
    _running_trial(study, Worker("another-machine", 1, 0.0))

    assert fail_dead_workers_trials(study, storage, on_interrupted) == [dead.number]
    trials = study.get_trials()
    assert [t.state for t in trials[:3]] == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING]
    assert trials[0].user_attrs["fail_reason"].startswith("interrupted: process")
    assert study.user_attrs["interrupted.trial-0"] == trials[0].user_attrs["fail_reason"]
    assert ended == {"run-of-0": trials[0].user_attrs["fail_reason"]}
    retry = trials[3]  # queued with the same params, remembering which trial it repeats
    assert retry.state == TrialState.WAITING and retry.params == dead.params
    assert retry.system_attrs["failed_trial"] == dead.number
    assert "fail_reason" not in retry.user_attrs and "mlflow_run_id" not in retry.user_attrs
    rerun = study.ask()  # the queued retry runs next; the objective reads which trial it repeats
    assert rerun.number == retry.number and retried_trial(rerun) == dead.number
    assert retried_trial(study.ask()) is None  # a first run


def test_the_heartbeat_fails_trials_of_silent_workers_on_any_host(tmp_path: Path) -> None:
    ended: dict[str, str] = {}
    on_interrupted = OnInterrupted(lambda run_id, reason: ended.update({run_id: reason}))
    study, storage = _study(tmp_path, on_interrupted, heartbeat=1)  # grace period: 4 intervals
    trial = _running_trial(study, Worker("another-machine", 1, 0.0))
    study_id = storage.get_study_id_from_name(study.study_name)
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))
    optuna.storages.fail_stale_trials(study)
    assert study.get_trials()[0].state == TrialState.RUNNING  # heartbeat still fresh
    time.sleep(6)  # > 4 intervals, with the storage's whole-second timestamps
    optuna.storages.fail_stale_trials(study)  # what every worker's optimize() runs before a new trial
    first, retry = study.get_trials()
    assert first.state == TrialState.FAIL
    assert "process 1 on another-machine" in study.user_attrs["interrupted.trial-0"]
    assert list(ended) == ["run-of-0"]
    assert retry.state == TrialState.WAITING and retry.params == trial.params
