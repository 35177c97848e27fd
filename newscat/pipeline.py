"""The main job: load and tokenize once, run the study, then evaluate, log and register the best model."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import optuna

from newscat import pyfunc, registry, report, tracking, tune
from newscat.budget import Budget
from newscat.card import CardFacts, model_card
from newscat.config import Config
from newscat.data import NewsData, load_news
from newscat.features import load_tokenizer, tokenize_news, tokenize_rows
from newscat.modeling import BaseClassifier, load_base_classifier, resolve_model_path
from newscat.promotion import promote_with_gate
from newscat.recovery import WORKER_ATTR, OnInterrupted, Worker
from newscat.train import TrialParams, describe_failure, train_classifier

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

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


@dataclass(frozen=True)
class StudyInputs:
    """Heavy objects built once per study and shared by every trial."""

    cfg: Config
    data: NewsData
    tokenizer: PreTrainedTokenizerBase
    tokenized: datasets.DatasetDict
    base: BaseClassifier
    space: tune.SearchSpace


def prepare(cfg: Config) -> StudyInputs:
    """Load and validate the data first (fail before any model work), then model and tokens."""
    data = load_news(cfg.data, seed=cfg.seed)
    log.info(
        "data %s (%s): %d train / %d validation / %d test rows, classes %s",
        cfg.data.source,
        data.layout,
        len(data.train),
        len(data.validation),
        len(data.test),
        ", ".join(data.label_names),
    )
    space = tune.search_space_from(cfg.tune.search_space, max_epochs=cfg.train.max_epochs)
    model_path = resolve_model_path(cfg.model.name)
    tokenizer = load_tokenizer(model_path)
    tokenized = tokenize_news(tokenizer, data, cfg.model.max_length)
    base = load_base_classifier(model_path, data.label_names)
    return StudyInputs(cfg, data, tokenizer, tokenized, base, space)


def tune_and_register(cfg: Config) -> TuneOutcome:
    """Run (or resume) the study under one parent run, refit the best params on more rows, evaluate, register.

    With `tune.timeout` the whole job (loading, trials, refit, test scoring) is fitted into that many seconds.
    """
    budget = Budget(cfg.tune.timeout)
    tracking.prepare_store()  # first: a refused login or an unreachable server fails before any loading
    inputs = prepare(cfg)
    study = tune.open_study(
        cfg.tune,
        seed=cfg.seed,
        max_evals=cfg.train.max_epochs * cfg.train.evals_per_epoch,
        on_interrupted=OnInterrupted(tracking.end_interrupted_run),
    )
    with tune.study_lock(study):  # workers starting together agree on one parent run and one warm-start queue
        tune.enqueue_first_trials(study, inputs.space)
        parent_run_id = _study_run_id(cfg, study)
    with tracking.start_study_run(parent_run_id) as parent:
        tracking.claim_study_run()
        left = tracking.end_dead_workers_runs(cfg.tune.study_name)
        if left:
            log.warning("ended %d run(s) left RUNNING by a process that died: FAILED (newscat.fail_reason)", len(left))
        digests = tracking.log_study_setup(cfg, inputs.data)
        reserve = _refit_reserve(inputs)
        tune.run_trials(
            study,
            make_objective(inputs, budget, reserve),
            cfg.tune,
            time_is_up=lambda: budget.tuning_over(reserve, len(inputs.data.test)),
        )
        running = tune.others_running(study)
        if running:  # the last worker out registers the model, with every trial's result in
            log.info("trials %s still run in other workers; the last of them registers the best model", running)
            return TuneOutcome(parent.info.run_id, None, None, {}, {}, "", cfg.registered_model, None)
        with tune.study_lock(study):  # two workers finishing together: one registers, the other finds it done
            best = _best_trial(study)
            tracking.log_study_summary(tune.study_summary(study), best)
            tracking.log_study_report(study)
            outcome, predictions = _finish(inputs, study, best, parent.info.run_id, digests, budget)
    if cfg.promote.mode == "auto":  # after the study's run has ended: the decision gets a run of its own
        if predictions is None:
            log.info("promote=auto: version %s was registered (and gated) by an earlier process", outcome.version)
        else:
            _run_gate(cfg, predictions)
    return outcome


def _study_run_id(cfg: Config, study: optuna.Study) -> str:
    """The study's parent run, chosen once: the first worker's run (`mlflow run`'s, or a new `study-<name>` run).

    Later workers and resumes log their trials under it; a later `mlflow run` worker's own run is tagged as a
    worker of that study run. Call under `tune.study_lock`.
    """
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if not (run_id and tracking.run_exists(run_id)):
        run_id = tracking.create_study_run(cfg)
        study.set_user_attr("mlflow_parent_run_id", run_id)
    tracking.link_worker_run(run_id)
    return run_id


def _refit_reserve(inputs: StudyInputs) -> float:
    """Training samples the refit may need (its rows x the most epochs a trial can pick)."""
    train = inputs.cfg.train
    if not train.refit:
        return 0.0
    rows = len(inputs.data.refit_rows(train.refit_samples, seed=inputs.cfg.seed))
    return 0.0 if rows <= len(inputs.data.train) else float(rows * train.max_epochs)


class StudyError(RuntimeError):
    """The study cannot produce a model."""


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    try:
        return study.best_trial
    except ValueError as exc:
        raise StudyError(
            f"study {study.study_name!r} has no complete trial; see the FAILED trial runs' newscat.fail_reason"
        ) from exc


def make_objective(
    inputs: StudyInputs, budget: Budget | None = None, reserve: float = 0.0
) -> Callable[[optuna.Trial], float]:
    """The objective: one training run per trial, tracked as a nested MLflow run.

    `reserve`: training samples the refit after the study may need (the budget keeps time for them).
    """
    cfg = inputs.cfg
    budget = budget or Budget(None)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, Worker.current().tag())  # lets a resume tell a dead process's trial
        retry_of = trial.study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial")
        trial_dir = Path(cfg.train.work_dir) / cfg.tune.study_name / f"trial-{trial.number}"
        run = tracking.start_trial_run(trial.number, cfg.tune.study_name, retry_of=retry_of)
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        params = None
        try:
            params = tune.suggest_params(trial, inputs.space)
            again = f" (retry of interrupted trial {retry_of})" if retry_of is not None else ""
            log.info("trial %d of %d%s: %s", trial.number, cfg.tune.n_trials, again, _short(dataclasses.asdict(params)))
            tracking.log_trial_params(trial.number, dataclasses.asdict(params), cfg)
            pruning = tune.PruningCallback(trial, cfg.train.metric, cfg.train.evals_per_epoch)
            result = train_classifier(
                inputs.base.fresh(cfg.seed + trial.number),
                inputs.tokenizer,
                inputs.tokenized,
                params,
                cfg.train,
                output_dir=trial_dir,
                seed=cfg.seed + trial.number,
                callbacks=[tracking.EpochMetricsCallback(cfg.train.evals_per_epoch), pruning],
                deadline=budget.tuning_deadline(reserve, len(inputs.data.test)),
            )
            budget.observe(result.samples_per_second, result.samples_trained)
            if pruning.pruned_at is not None:
                raise optuna.TrialPruned(f"pruned at epoch {pruning.pruned_at}")
            if not result.best_metrics:
                raise optuna.TrialPruned("stopped by the time budget before its first evaluation")
            if result.stopped_at_deadline:
                mlflow.set_tag("newscat.stopped_by_budget", f"after {result.epochs_run} epochs")
                log.info("trial %d stopped by the time budget after %s epochs", trial.number, result.epochs_run)
            tracking.log_trial_result(result.best_metrics, result.best_epoch, result.best_checkpoint)
            tracking.end_trial_run("COMPLETE")
            return result.best_metrics[cfg.train.metric]
        except optuna.TrialPruned:
            tracking.end_trial_run("PRUNED")
            raise
        except BaseException as exc:
            reason = describe_failure(exc, params, cfg.model.max_length)
            trial.set_user_attr("fail_reason", reason[:1000])
            tracking.end_trial_run("FAIL", reason + "\n" + traceback.format_exc(limit=5))
            raise
        finally:
            shutil.rmtree(trial_dir, ignore_errors=True)  # bounded disk: the checkpoint lives in MLflow

    return objective


def _finish(
    inputs: StudyInputs,
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    parent_run_id: str,
    digests: dict[str, str],
    budget: Budget,
) -> tuple[TuneOutcome, report.Predictions | None]:
    """Refit (or take the best trial's checkpoint), log it as a pyfunc, score the test split, register it.

    Returns the outcome and the test predictions (None when the version was registered by an earlier process).
    """
    cfg, data = inputs.cfg, inputs.data
    existing = registry.find_version(cfg.registered_model, best.user_attrs["mlflow_run_id"])
    if existing is not None:
        log.info(
            "best trial %d is already registered as version %s; nothing new to register", best.number, existing.version
        )
        metrics = {k[5:]: float(v) for k, v in existing.tags.items() if k.startswith("test_")}
        return _outcome(parent_run_id, best, existing, metrics), None
    source_run_id, train_rows = refit_best(inputs, study, best, budget)
    with tempfile.TemporaryDirectory(prefix="newscat-best-") as tmp:
        checkpoint = tracking.download_checkpoint(source_run_id, Path(tmp) / "download")
        model_dir = pyfunc.export_classifier(
            checkpoint, Path(tmp) / "classifier", max_length=cfg.model.max_length, base_model=cfg.model.name
        )
        weights_sha256 = pyfunc.logged_weights_sha256(model_dir)
        info = pyfunc.log_pyfunc(model_dir)
    # Loading the logged copy checks its weights' SHA-256, so a model cut short by a kill is never registered.
    log.info("scoring the final model (%d training rows) on %d test rows", train_rows, len(data.test))
    record = tracking.dataset_record(data.test, cfg.data.source, "test")
    predictions = report.predict_split(pyfunc.load(info.model_uri), data.test, data.label_names, record)
    test_metrics = report.report_metrics(predictions)
    tracking.log_evaluation(predictions, test_metrics)
    split_rows = {"trials' train": len(data.train), "final train": train_rows, "validation": len(data.validation)}
    card = model_card(
        CardFacts(
            registered_model=cfg.registered_model,
            base_model=cfg.model.name,
            data_source=cfg.data.source,
            label_names=data.label_names,
            split_rows={**split_rows, "test": len(data.test)},
            digests=digests,
            params=_card_params(source_run_id),
            study=study.study_name,
            trial=best.number,
            metrics=test_metrics,
            per_class=report.per_class_table(predictions, test_metrics),
            max_length=cfg.model.max_length,
        )
    )
    tracking.log_model_card(info.model_id, card)
    tags = {
        "study": study.study_name,
        "trial": best.number,
        "parent_run_id": parent_run_id,
        "trial_run_id": best.user_attrs["mlflow_run_id"],
        "weights_run_id": source_run_id,
        "weights_sha256": weights_sha256,
        "train_rows": train_rows,
        "data.source": cfg.data.source,
        "data.text_columns": ",".join(cfg.data.text_columns),
        "data.label_column": cfg.data.label_column,
        "data.train_digest": digests["train"],
        "data.test_digest": digests["test"],
        "base_model": cfg.model.name,
        "seed": cfg.seed,
        f"evaluation.{record['digest']}.run_id": parent_run_id,
        **{f"test_{k}": f"{test_metrics[k]:.4f}" for k in ("accuracy", "macro_f1", "ece")},
    }
    version = registry.register_version(info.model_uri, cfg.registered_model, tags=tags, description=card)
    log.info("registered %s version %s with alias challenger", cfg.registered_model, version.version)
    return _outcome(parent_run_id, best, version, test_metrics), predictions


def _card_params(weights_run_id: str) -> dict[str, str]:
    """The params the final weights were trained with (a refit under a budget may run fewer epochs)."""
    logged = tracking.run_params(weights_run_id)
    keys = ("learning_rate", "batch_size", "epochs", "warmup_ratio", "weight_decay", "precision", "freeze_embeddings")
    return {k: logged[k] for k in keys if k in logged}


def _run_gate(cfg: Config, predictions: report.Predictions) -> None:
    """`promote=auto`: the challenger just registered faces the champion (the outcome is logged, never raised)."""
    result = promote_with_gate(
        cfg.registered_model,
        source=cfg.data.source,
        metric=cfg.promote.metric,
        margin=cfg.promote.margin,
        alpha=cfg.promote.alpha,
        seed=cfg.seed,
        scored=predictions,
        reason="promote=auto at the end of tuning",
    )
    log.info("promotion gate (run %s):\n%s", result.run_id, result.decision.table())


def refit_best(
    inputs: StudyInputs, study: optuna.Study, best: optuna.trial.FrozenTrial, budget: Budget
) -> tuple[str, int]:
    """Retrain the best trial's params on more rows in a nested `refit` run; returns (run holding the weights, rows).

    Without more rows than the trials saw (or with refit off) the best trial's own checkpoint is used. A refit
    already finished for this trial (an earlier, interrupted process) is reused. Under a time budget the refit runs
    as many epochs as still fit, at most the trial's.
    """
    cfg, data = inputs.cfg, inputs.data
    trial_run_id, tuned_rows = best.user_attrs["mlflow_run_id"], len(data.train)
    rows = data.refit_rows(cfg.train.refit_samples, seed=cfg.seed) if cfg.train.refit else data.train
    if len(rows) <= tuned_rows:
        return trial_run_id, tuned_rows
    done = study.user_attrs.get("refit", {})
    if done.get("trial") == best.number and tracking.run_finished(done.get("run_id", "")):
        log.info("reusing the refit of trial %d (run %s)", best.number, done["run_id"])
        return done["run_id"], int(done["rows"])
    params = _trial_params(best, inputs.space)
    affordable = budget.affordable_samples(len(data.test))
    if affordable is not None:
        params = dataclasses.replace(params, epochs=min(params.epochs, round(affordable / len(rows), 2)))
        if params.epochs < 0.5:  # too little time left for a refit worth having
            log.info("time budget: no time to refit (%.2f epochs fit); using trial %d", params.epochs, best.number)
            return trial_run_id, tuned_rows
    log.info("refit: trial %d's params on %d rows for %s epochs", best.number, len(rows), params.epochs)
    refit_dir = Path(cfg.train.work_dir) / cfg.tune.study_name / "refit"
    with tracking.start_refit_run(best.number, cfg.tune.study_name) as run:
        tracking.log_trial_params(best.number, dataclasses.asdict(params), cfg, train_rows=len(rows))
        try:
            result = train_classifier(
                inputs.base.fresh(cfg.seed + best.number),
                inputs.tokenizer,
                datasets_with_train(inputs, tokenize_rows(inputs.tokenizer, rows, cfg.model.max_length)),
                params,
                cfg.train,
                output_dir=refit_dir,
                seed=cfg.seed + best.number,
                callbacks=[tracking.EpochMetricsCallback(cfg.train.evals_per_epoch)],
                # Slower than estimated (a busy machine)? Stop after a last evaluation, keep the best one.
                deadline=budget.training_deadline(len(data.test)),
            )
            if result.stopped_at_deadline:
                mlflow.set_tag("newscat.stopped_by_budget", f"after {result.epochs_run} epochs")
                log.info("refit stopped by the time budget after %s epochs", result.epochs_run)
            tracking.log_trial_result(result.best_metrics, result.best_epoch, result.best_checkpoint)
        finally:
            shutil.rmtree(refit_dir, ignore_errors=True)
    study.set_user_attr("refit", {"trial": best.number, "run_id": run.info.run_id, "rows": len(rows)})
    return run.info.run_id, len(rows)


def _trial_params(trial: optuna.trial.FrozenTrial, space: tune.SearchSpace) -> TrialParams:
    """A finished trial's params: the sampled ones from Optuna, fixed ones from the search space."""
    values = {**{k: v for k, v in space.params.items() if not isinstance(v, Mapping)}, **trial.params}
    return TrialParams.from_values(values, whole_epochs=False)


def datasets_with_train(inputs: StudyInputs, train: datasets.Dataset) -> datasets.DatasetDict:
    """The study's tokenized splits with another training set."""
    import datasets

    return datasets.DatasetDict({"train": train, "validation": inputs.tokenized["validation"]})


def _outcome(
    parent_run_id: str, best: optuna.trial.FrozenTrial, version: Any, test_metrics: dict[str, float]
) -> TuneOutcome:
    return TuneOutcome(
        parent_run_id=parent_run_id,
        best_trial=best.number,
        best_value=float(best.value),
        best_params=dict(best.params),
        test_metrics=test_metrics,
        model_uri=f"models:/{version.name}/{version.version}",
        registered_model=version.name,
        version=str(version.version),
    )


def _short(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
