"""The main job: load and tokenize once, run the study, then evaluate, log and register the best model."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pandas as pd

from newscat import pyfunc, registry, tracking, tune
from newscat.config import Config
from newscat.data import NewsData, load_news
from newscat.evaluate import classification_metrics, confusion
from newscat.features import load_tokenizer, tokenize_news
from newscat.modeling import BaseClassifier, load_base_classifier, resolve_model_path
from newscat.train import train_classifier

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger("newscat")


@dataclass(frozen=True)
class TuneOutcome:
    """What `newscat tune` reports at the end."""

    parent_run_id: str
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    test_metrics: dict[str, float]
    model_uri: str
    registered_model: str
    version: str


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
    """Run (or resume) the study under one parent run, then log, evaluate and register the best model."""
    inputs = prepare(cfg)
    study = tune.open_study(cfg.tune, seed=cfg.seed, max_epochs=cfg.train.max_epochs)
    tune.enqueue_first_trials(study, inputs.space)
    with tracking.start_study_run(cfg, resume_run_id=study.user_attrs.get("mlflow_parent_run_id")) as parent:
        if "mlflow_parent_run_id" not in study.user_attrs:
            study.set_user_attr("mlflow_parent_run_id", parent.info.run_id)
        digests = tracking.log_study_setup(cfg, inputs.data)
        tune.run_trials(study, make_objective(inputs), cfg.tune)
        best = _best_trial(study)
        tracking.log_study_summary(tune.study_summary(study), best)
        return _finish(inputs, study, best, parent.info.run_id, digests)


class StudyError(RuntimeError):
    """The study cannot produce a model."""


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    try:
        return study.best_trial
    except ValueError as exc:
        raise StudyError(
            f"study {study.study_name!r} has no complete trial; see the FAILED trial runs' newscat.fail_reason"
        ) from exc


def make_objective(inputs: StudyInputs) -> Callable[[optuna.Trial], float]:
    """The objective: one training run per trial, tracked as a nested MLflow run."""
    cfg = inputs.cfg

    def objective(trial: optuna.Trial) -> float:
        params = tune.suggest_params(trial, inputs.space)
        log.info("trial %d of %d: %s", trial.number, cfg.tune.n_trials, _short(dataclasses.asdict(params)))
        trial_dir = Path(cfg.train.work_dir) / cfg.tune.study_name / f"trial-{trial.number}"
        run = tracking.start_trial_run(trial.number, cfg.tune.study_name)
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        tracking.log_trial_params(trial.number, dataclasses.asdict(params), cfg)
        pruning = tune.PruningCallback(trial, cfg.train.metric)
        try:
            result = train_classifier(
                inputs.base.fresh(cfg.seed + trial.number),
                inputs.tokenizer,
                inputs.tokenized,
                params,
                cfg.train,
                output_dir=trial_dir,
                seed=cfg.seed + trial.number,
                callbacks=[tracking.EpochMetricsCallback(), pruning],
            )
            if pruning.pruned_at is not None:
                raise optuna.TrialPruned(f"pruned after epoch {pruning.pruned_at}")
            tracking.log_trial_result(result.best_metrics, result.best_epoch, result.best_checkpoint)
            tracking.end_trial_run("COMPLETE")
            return result.best_metrics[cfg.train.metric]
        except optuna.TrialPruned:
            tracking.end_trial_run("PRUNED")
            raise
        except BaseException as exc:
            reason = f"{type(exc).__name__}: {exc}"
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
) -> TuneOutcome:
    """Export the best trial's checkpoint, log it as a pyfunc, score the test split, register it."""
    cfg, data = inputs.cfg, inputs.data
    existing = registry.find_version(cfg.registered_model, best.user_attrs["mlflow_run_id"])
    if existing is not None:
        log.info(
            "best trial %d is already registered as version %s; nothing new to register", best.number, existing.version
        )
        return _outcome(
            parent_run_id, best, existing, {k[5:]: float(v) for k, v in existing.tags.items() if k.startswith("test_")}
        )
    with tempfile.TemporaryDirectory(prefix="newscat-best-") as tmp:
        checkpoint = tracking.download_checkpoint(best.user_attrs["mlflow_run_id"], Path(tmp) / "download")
        model_dir = pyfunc.export_classifier(
            checkpoint, Path(tmp) / "classifier", max_length=cfg.model.max_length, base_model=cfg.model.name
        )
        info = pyfunc.log_pyfunc(model_dir)
    log.info("scoring the best model (trial %d) on %d test rows", best.number, len(data.test))
    test_metrics = evaluate_model(info.model_uri, data)
    tracking.log_metrics(test_metrics, prefix="test_")
    description = (
        f"Fine-tuned {cfg.model.name} on {cfg.data.source} (study {study.study_name}, trial {best.number}). "
        f"Test accuracy {test_metrics['accuracy']:.4f}, macro-F1 {test_metrics['macro_f1']:.4f}."
    )
    tags = {
        "study": study.study_name,
        "trial": best.number,
        "parent_run_id": parent_run_id,
        "trial_run_id": best.user_attrs["mlflow_run_id"],
        "data.source": cfg.data.source,
        "data.train_digest": digests["train"],
        "data.test_digest": digests["test"],
        "base_model": cfg.model.name,
        **{f"test_{k}": f"{test_metrics[k]:.4f}" for k in ("accuracy", "macro_f1")},
    }
    version = registry.register_version(info.model_uri, cfg.registered_model, tags=tags, description=description)
    log.info("registered %s version %s with alias challenger", cfg.registered_model, version.version)
    return _outcome(parent_run_id, best, version, test_metrics)


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


def evaluate_model(model_uri: str, data: NewsData) -> dict[str, float]:
    """Score the logged model (the very artifact that gets served) on the test split."""
    predicted = pyfunc.load(model_uri).predict(pd.DataFrame({"text": data.test["text"]}))
    to_id = {name: i for i, name in enumerate(data.label_names)}
    predictions = predicted["label"].map(to_id).to_numpy()
    labels = data.test["label"].to_numpy()
    tracking.log_confusion_matrix(data.label_names, confusion(labels, predictions, len(data.label_names)))
    return classification_metrics(labels, predictions, data.label_names)


def _short(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
