"""The Optuna study: storage, locks, the trial loop with its stop rules, pruning and progress."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import optuna
from transformers import TrainerCallback

from newscat.config import ConfigError, TuneConfig, eval_index
from newscat.locks import beside_sqlite, database_lock
from newscat.redaction import redact_url
from newscat.training.racing import RacingPruner
from newscat.training.recovery import OnInterrupted, fail_dead_workers_trials

log = logging.getLogger("newscat")

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def make_storage(cfg: TuneConfig, on_interrupted: OnInterrupted | None = None) -> optuna.storages.RDBStorage:
    """The study's RDB storage; for sqlite, PostgreSQL and MySQL with heartbeats (and a patient sqlite connection for
    concurrent processes). Keep it and pass it on: Optuna keeps the storage of a study private."""
    known = cfg.storage.startswith(("sqlite:", "postgresql", "mysql"))
    heartbeat = (cfg.heartbeat_interval or None) if known else None
    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental since Optuna 2.8; newscat relies on them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                cfg.storage,
                # sqlite: wait for another process's write instead of failing with "database is locked".
                engine_kwargs={"connect_args": {"timeout": 60}} if cfg.storage.startswith("sqlite:") else None,
                heartbeat_interval=heartbeat,
                grace_period=4 * heartbeat if heartbeat else None,
                heartbeat_stale_trial_callback=on_interrupted if heartbeat else None,
            )
    except Exception as exc:  # bad URL, missing driver, unreachable server
        raise storage_error(cfg.storage, exc) from exc


def storage_error(url: str, exc: Exception) -> ConfigError:
    """Why the storage cannot be opened, with the URL and the driver's words, both without a password."""
    return ConfigError(redact_url(f"cannot open Optuna storage {url!r}: {str(exc).splitlines()[0]}"))


def open_study(
    cfg: TuneConfig,
    *,
    seed: int,
    max_evals: int,
    n_validation: int | None = None,
    on_interrupted: OnInterrupted | None = None,
    storage: optuna.storages.RDBStorage | None = None,
) -> optuna.Study:
    """Create the study in `storage` (default: `make_storage`'s), or load it when it exists (resume); trials of dead
    local workers are failed first."""
    storage = storage or make_storage(cfg, on_interrupted)
    try:
        existing = optuna.study.get_all_study_names(storage)
    except Exception as exc:  # bad URL, missing driver, unreachable server
        raise storage_error(cfg.storage, exc) from exc
    resumed = cfg.study_name in existing
    n_done = len(optuna.load_study(study_name=cfg.study_name, storage=storage).trials) if resumed else 0
    # Offset the seed by the trials already run, so a resumed study does not replay its first samples.
    sampler = optuna.samplers.TPESampler(seed=seed + n_done, multivariate=True)
    study = optuna.create_study(
        study_name=cfg.study_name,
        storage=storage,
        direction="maximize",
        sampler=sampler,
        pruner=make_pruner(cfg, max_evals, n_validation),
        load_if_exists=True,
    )
    if resumed and on_interrupted is not None:
        fail_dead_workers_trials(study, storage, on_interrupted)
        optuna.storages.fail_stale_trials(study)  # other hosts' silent workers (heartbeat); no-op without one
    return study


@contextlib.contextmanager
def study_lock(study_name: str, storage: optuna.storages.RDBStorage) -> Iterator[None]:
    """Serializes the few study-wide decisions workers must agree on (which MLflow run is the study's parent, who
    registers the model), through the study's own database: a PostgreSQL advisory lock, MySQL's GET_LOCK, or a
    file lock beside a sqlite file."""
    url = storage.url
    key = int.from_bytes(hashlib.sha256(f"newscat:{study_name}".encode()).digest()[:8], "big", signed=True)
    if url.startswith("postgresql"):
        with database_lock(storage.engine, "SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)", key):
            yield
    elif url.startswith("mysql"):
        with database_lock(storage.engine, "SELECT GET_LOCK(:key, -1)", "SELECT RELEASE_LOCK(:key)", f"newscat:{key}"):
            yield
    else:  # sqlite: a file lock (none for an in-memory database, which serves one process)
        with beside_sqlite(url):
            yield


def others_running(study: optuna.Study) -> list[int]:
    """Numbers of trials RUNNING now (in other workers: call it outside a trial)."""
    return [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]


def make_pruner(cfg: TuneConfig, max_evals: int, n_validation: int | None = None) -> optuna.pruners.BasePruner:
    """Median (default), racing (needs `n_validation`, the validation rows), successive halving, Hyperband over
    evaluation points (`max_evals` = max_epochs x evals_per_epoch), or none."""
    if cfg.pruner == "racing":
        if n_validation is None:
            raise ValueError("the racing pruner needs the validation set's size")
        return RacingPruner(n_validation, n_startup_trials=cfg.pruner_startup_trials)
    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.pruner_startup_trials, n_warmup_steps=0)
    if cfg.pruner == "halving":  # rungs at evaluations 1, 3, 9...: a trial goes on only if it is in the top third there
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_evals, reduction_factor=3)
    return optuna.pruners.NopPruner()


def finished_count(study: optuna.Study) -> int:
    """Trials that count toward n_trials: complete or pruned (failed ones are retried)."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    cfg: TuneConfig,
    *,
    time_is_up: Callable[[], bool] = lambda: False,
) -> None:
    """Run trials until n_trials are finished in total (across resumes and workers) or `time_is_up()`."""
    remaining = cfg.n_trials - finished_count(study)
    if remaining <= 0:
        log.info("study %s already has %d finished trials; nothing to run", study.study_name, cfg.n_trials)
        return
    if remaining <= len(others_running(study)):
        log.info("study %s: the missing trials are running in other workers; nothing to run here", study.study_name)
        return
    log.info("study %s: running up to %d trial(s) of %d", study.study_name, remaining, cfg.n_trials)
    failures = FailureLimit(cfg.max_failed_trials)
    study.optimize(
        objective,
        n_trials=remaining + cfg.max_failed_trials,  # failed trials are replaced, up to the failure limit
        catch=(Exception,),  # a failed trial is recorded (FAIL + reason) and the study goes on
        callbacks=[
            # Across workers and resumes; trials running elsewhere count, so workers do not overshoot n_trials.
            optuna.study.MaxTrialsCallback(cfg.n_trials, states=(*FINISHED, optuna.trial.TrialState.RUNNING)),
            ProgressReporter(cfg.n_trials),
            failures,
            StopWhen(time_is_up),
        ],
        gc_after_trial=True,
    )


class ProgressReporter:
    """Prints `trial n of N: STATE value, best so far` after every trial."""

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = "" if trial.value is None else f" value={trial.value:.4f}"
        try:
            best = f"best so far {study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:
            best = "no complete trial yet"
        log.info(
            "trial %d finished (%d of %d): %s%s; %s",
            trial.number,
            finished_count(study),
            self.n_trials,
            trial.state.name,
            value,
            best,
        )


class FailureLimit:
    """Stops the study in this process after `limit` failed trials: something is wrong beyond one bad sample."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.failed = 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state != optuna.trial.TrialState.FAIL:
            return
        self.failed += 1
        log.warning("trial %d FAILED: %s", trial.number, trial.user_attrs.get("fail_reason", "no reason recorded"))
        if self.failed >= self.limit:
            log.error("%d trials failed in this process (tune.max_failed_trials); stopping the study", self.failed)
            study.stop()


class StopWhen:
    """Stops the study (no new trial starts) once `condition()` holds, e.g. the time budget's tuning share is spent."""

    def __init__(self, condition: Callable[[], bool]) -> None:
        self.condition = condition

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.condition():
            log.info("time budget: no further trials start")
            study.stop()


class PruningCallback(TrainerCallback):
    """Reports each validation score to Optuna and stops training when the pruner says so.

    The step is the evaluation number (`evals_per_epoch` per epoch), so trials of any batch size line up.
    """

    def __init__(self, trial: optuna.Trial, metric: str, evals_per_epoch: int = 1) -> None:
        self.trial = trial
        self.metric = metric
        self.evals_per_epoch = evals_per_epoch
        self.pruned_at: float | None = None  # the epoch (fractional) at which the trial was pruned

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs: Any
    ) -> None:
        if not metrics or self.metric not in metrics:
            return
        self.trial.report(float(metrics[self.metric]), step=eval_index(state.epoch, self.evals_per_epoch))
        if self.trial.should_prune():
            self.pruned_at = round(state.epoch, 2)
            control.should_training_stop = True


def study_summary(study: optuna.Study) -> dict[str, int]:
    """Counts of trials by state."""
    counts = {state.name.lower(): 0 for state in optuna.trial.TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] += 1
    return {f"trials_{name}": n for name, n in counts.items() if name in ("complete", "pruned", "fail", "running")}
