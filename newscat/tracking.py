"""MLflow tracking: the study's parent run, one nested run per trial, per-epoch metrics, artifacts."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.tracking import MlflowClient
from transformers import TrainerCallback

from newscat import report
from newscat.config import Config
from newscat.evaluate import confusion
from newscat.locks import beside_sqlite
from newscat.pyfunc import MODEL_FILES
from newscat.recovery import Worker, describe
from newscat.train import eval_index, use_bf16

if TYPE_CHECKING:
    import pandas as pd

    from newscat.data import NewsData

# Optuna's trial state -> the MLflow run status that tells the same story.
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
# A trial's checkpoint: the files the served model is made of, plus the Trainer's state (no pickles).
CHECKPOINT_FILES = (*MODEL_FILES, "trainer_state.json")
WORKER_TAG = "newscat.worker"  # host:pid:start time of the process that holds a RUNNING run


def prepare_store() -> None:
    """Reach the tracking store once, before any work: a server that refuses the credentials fails here. A sqlite
    database is created or upgraded under a file lock, since MLflow's schema migration is not safe against several
    workers starting at the same moment ("duplicate column name")."""
    with beside_sqlite(mlflow.get_tracking_uri()):
        MlflowClient().search_experiments(max_results=1)


def create_study_run(cfg: Config) -> str:
    """A new parent run for a study: the one `mlflow run` made (MLFLOW_RUN_ID), else `study-<name>`."""
    if os.environ.get("MLFLOW_RUN_ID"):
        return os.environ["MLFLOW_RUN_ID"]
    mlflow.set_experiment(cfg.experiment)
    experiment_id = mlflow.get_experiment_by_name(cfg.experiment).experiment_id
    return MlflowClient().create_run(experiment_id, run_name=f"study-{cfg.tune.study_name}").info.run_id


def start_study_run(run_id: str) -> mlflow.ActiveRun:
    """Open the study's parent run in this process (every worker and resume logs under the same one)."""
    # `mlflow run`'s MLFLOW_RUN_ID has been read (create_study_run, link_worker_run); MLflow would otherwise resume
    # that run in the next start_run, i.e. the first trial's nested run.
    os.environ.pop("MLFLOW_RUN_ID", None)
    mlflow.set_experiment(experiment_id=MlflowClient().get_run(run_id).info.experiment_id)
    return mlflow.start_run(run_id=run_id)


def link_worker_run(study_run_id: str) -> None:
    """Under `mlflow run`, a worker whose own run is not the study's run says where its trials went."""
    own = os.environ.get("MLFLOW_RUN_ID")
    if own and own != study_run_id:
        MlflowClient().set_tag(own, "newscat.role", "worker")
        MlflowClient().set_tag(own, "newscat.study_run_id", study_run_id)


def run_exists(run_id: str) -> bool:
    """Whether `run_id` names a run that is not deleted."""
    try:
        return MlflowClient().get_run(run_id).info.lifecycle_stage == "active"
    except mlflow.exceptions.MlflowException:
        return False


def run_params(run_id: str) -> dict[str, str]:
    """The params logged to a run."""
    return dict(MlflowClient().get_run(run_id).data.params)


def run_finished(run_id: str) -> bool:
    """Whether `run_id` names an existing run that finished successfully."""
    if not run_id:
        return False
    try:
        return MlflowClient().get_run(run_id).info.status == "FINISHED"
    except mlflow.exceptions.MlflowException:
        return False


def log_study_setup(cfg: Config, data: NewsData) -> dict[str, str]:
    """Config as flat params, dataset lineage with digests; returns the digests by split."""
    log_params_once(cfg.to_flat_dict())
    mlflow.set_tags({"newscat.study": cfg.tune.study_name, "newscat.role": "study"})
    digests = {}
    with warnings.catch_warnings():  # MLflow's hints about source kinds and int columns are noise here
        warnings.simplefilter("ignore", UserWarning)
        for split in ("train", "validation", "test"):
            frame = getattr(data, split)
            dataset = mlflow.data.from_pandas(frame, source=_source(data.source), targets="label", name=split)
            mlflow.log_input(dataset, context=split)
            digests[split] = dataset.digest
    log_params_once(
        {
            "data.layout": data.layout,
            "data.labels": ",".join(data.label_names)[:500],
            "data.train_rows": len(data.train),
            "data.validation_rows": len(data.validation),
            "data.test_rows": len(data.test),
            "data.train_digest": digests["train"],
        }
    )
    return digests


def log_params_once(params: Mapping[str, Any]) -> None:
    """Log params; on a resumed run keep the first values (MLflow forbids changing them) and tag changes."""
    logged = MlflowClient().get_run(mlflow.active_run().info.run_id).data.params
    new = {k: v for k, v in params.items() if k not in logged}
    changed = {
        f"newscat.resumed_with.{k}": str(v)[:5000] for k, v in params.items() if k in logged and logged[k] != str(v)
    }
    if new:
        mlflow.log_params(new)
    if changed:
        mlflow.set_tags(changed)


def _source(source: str) -> str:
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def start_trial_run(number: int, study_name: str, *, retry_of: int | None = None) -> mlflow.ActiveRun:
    """A nested run for one trial, named after its number, tagged with the process that runs it."""
    tags = {"newscat.study": study_name, "newscat.trial": str(number), "newscat.role": "trial", **_worker_tag()}
    if retry_of is not None:
        tags["newscat.retry_of_trial"] = str(retry_of)
    return mlflow.start_run(run_name=f"trial-{number}", nested=True, tags=tags)


def _worker_tag() -> dict[str, str]:
    return {WORKER_TAG: Worker.current().tag()}


def claim_study_run() -> None:
    """Mark the active (parent) run as held by this process, so that a later resume can tell it was left behind."""
    mlflow.set_tags(_worker_tag())


def end_interrupted_run(run_id: str, reason: str) -> None:
    """End a run left RUNNING by a process that died: FAILED, with the reason as a tag."""
    client = MlflowClient()
    try:
        if client.get_run(run_id).info.status != "RUNNING":
            return
        client.set_tag(run_id, "newscat.fail_reason", reason[:5000])
        client.set_terminated(run_id, status="FAILED")
    except mlflow.exceptions.MlflowException:
        pass  # the run is gone (deleted): nothing left to close


def end_dead_workers_runs(study_name: str) -> list[str]:
    """FAIL the study's runs (trials, refit, earlier parent runs) still RUNNING for a process on this host that is
    gone. Runs in the active run's experiment are checked; returns the run ids ended."""
    experiment_id = mlflow.active_run().info.experiment_id
    running = MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`newscat.study` = '{study_name}' and attributes.status = 'RUNNING'",
        max_results=1000,
    )
    ended = []
    for run in running:
        tag = run.data.tags.get(WORKER_TAG, "")
        worker = Worker.parse(tag)
        if worker is not None and worker.is_gone():
            end_interrupted_run(run.info.run_id, f"interrupted: {describe(tag)} stopped")
            ended.append(run.info.run_id)
    return ended


def start_refit_run(trial_number: int, study_name: str) -> mlflow.ActiveRun:
    """A nested run that retrains the best trial's params on more rows; its checkpoint becomes the model."""
    return mlflow.start_run(
        run_name=f"refit-trial-{trial_number}",
        nested=True,
        tags={
            "newscat.study": study_name,
            "newscat.trial": str(trial_number),
            "newscat.role": "refit",
            **_worker_tag(),
        },
    )


def end_trial_run(state: str, reason: str | None = None) -> None:
    """Close the active trial run with the status matching Optuna's state."""
    tags = {"optuna.state": state}
    if reason:
        tags["newscat.fail_reason"] = reason[:5000]
    mlflow.set_tags(tags)
    mlflow.end_run(status=RUN_STATUS[state])


def log_trial_result(best_metrics: Mapping[str, float], best_epoch: float | None, checkpoint: Path | None) -> None:
    """A complete trial's best-epoch metrics and its checkpoint."""
    log_metrics({**best_metrics, "epoch": best_epoch or 0}, prefix="best_")
    if checkpoint is not None:
        log_checkpoint(checkpoint)


def dataset_record(frame: pd.DataFrame, source: str, split: str) -> dict[str, Any]:
    """What an evaluation was computed on: source, split, MLflow dataset digest and row count."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, source=_source(source), targets="label", name=split)
    return {"source": source, "split": split, "digest": dataset.digest, "rows": len(frame)}


def log_evaluation(p: report.Predictions, metrics: Mapping[str, float], *, prefix: str = "test_") -> None:
    """An evaluation report in the active run: metrics, per-class table, confusion matrix and reliability PNGs,
    the most confident mistakes, the data it used (under `evaluation/`) and a markdown summary."""
    log_metrics(metrics, prefix=prefix)
    folder = "evaluation"
    per_class = report.per_class_table(p, dict(metrics))
    mistakes = report.confident_mistakes(p)
    mlflow.log_dict(p.data, f"{folder}/data.json")
    mlflow.log_table(per_class, f"{folder}/per_class.json")
    mlflow.log_table(mistakes, f"{folder}/confident_mistakes.json")
    matrix = confusion(p.labels, p.predicted, len(p.label_names))
    mlflow.log_dict({"labels": list(p.label_names), "matrix": matrix}, f"{folder}/confusion_matrix.json")
    mlflow.log_figure(report.confusion_figure(p), f"{folder}/confusion_matrix.png")
    mlflow.log_figure(report.reliability_figure(p), f"{folder}/reliability_diagram.png")
    mlflow.log_text(report.markdown_summary(p, dict(metrics), per_class, mistakes), f"{folder}/report.md")
    mlflow.set_tags({"evaluation.digest": p.data["digest"], "evaluation.source": str(p.data["source"])[:5000]})


def log_checks(report_: Any) -> None:
    """Behavioural check results in the active run: pass rates, failure counts, the report and every failure."""
    log_metrics(report_.metrics())
    mlflow.log_text(report_.text() + "\n", "checks/report.txt")
    mlflow.log_dict({"results": report_.results, "failures": report_.failures}, "checks/report.json")
    mlflow.set_tags({"newscat.role": "checks", "checks.failed": str(report_.failed)})


def log_gate_decision(decision: Any, *, forced: bool) -> None:
    """A promotion decision in the active run: both versions' metrics, McNemar's counts and p, the verdict."""
    metrics = {f"challenger_{k}": v for k, v in decision.challenger_metrics.items() if k in ("accuracy", "macro_f1")}
    metrics |= {f"champion_{k}": v for k, v in decision.champion_metrics.items() if k in ("accuracy", "macro_f1")}
    metrics |= {
        "mcnemar_only_challenger_right": decision.only_challenger_right,
        "mcnemar_only_champion_right": decision.only_champion_right,
        "mcnemar_p_value": decision.p_value,
        "gate_passed": float(decision.passed),
    }
    log_metrics(metrics)
    mlflow.log_text(decision.table() + "\n", "gate/comparison.txt")
    mlflow.set_tags(
        {
            "newscat.role": "promotion",
            "gate.challenger": decision.challenger,
            "gate.champion": decision.champion or "",
            "gate.passed": str(decision.passed).lower(),
            "gate.forced": str(forced).lower(),
            "gate.reason": decision.reason[:5000],
        }
    )


def log_study_report(study: Any) -> None:
    """Optuna's plots as one HTML page and as PNGs, and the trials table, under `study/` of the active run."""
    import matplotlib.pyplot as plt

    from newscat import study_report

    mlflow.log_text(study_report.html_report(study), "study/report.html")
    for name, figure in study_report.png_figures(study).items():
        mlflow.log_figure(figure, f"study/{name}.png")
        plt.close(figure)
    table = study_report.trials_table(study)
    mlflow.log_text(table.to_csv(index=False), "study/trials.csv")


def log_model_card(model_id: str, card: str) -> None:
    """The model card as README.md inside the logged model, and in the active run."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="newscat-card-") as tmp:
        path = Path(tmp) / "README.md"
        path.write_text(card, encoding="utf-8")
        MlflowClient().log_model_artifact(model_id, str(path))
    mlflow.log_text(card, "model_card.md")


def start_evaluation_run(model_uri: str, experiment: str = "newscat-evaluations") -> mlflow.ActiveRun:
    """A top-level run for an on-demand evaluation or a promotion decision.

    Made by id, so that an MLFLOW_RUN_ID set by `mlflow run` for the study is not taken over.
    """
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=f"evaluate {model_uri}"[:250], tags={"newscat.role": "evaluation"})
    mlflow.set_experiment(experiment_id=experiment_id)  # fluent start_run checks the run against it
    return mlflow.start_run(run_id=run.info.run_id)


def log_checkpoint(checkpoint: Path, artifact_path: str = "checkpoint") -> None:
    """Log the best epoch's weights, tokenizer and trainer state (no pickles) to the active run."""
    for name in CHECKPOINT_FILES:
        if (checkpoint / name).is_file():
            mlflow.log_artifact(str(checkpoint / name), artifact_path=artifact_path)


def download_checkpoint(run_id: str, target: Path, artifact_path: str = "checkpoint") -> Path:
    """Fetch a trial's logged checkpoint (it may come from an earlier process or another worker)."""
    target.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(target)))


def log_metrics(metrics: Mapping[str, float], *, step: int | None = None, prefix: str = "") -> None:
    """Log numeric metrics to the active run."""
    mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in metrics.items()}, step=step)


class EpochMetricsCallback(TrainerCallback):
    """Logs train loss, eval loss, accuracy, macro-F1 and the (fractional) epoch to the active run.

    The step is the evaluation number: with `evals_per_epoch` = 1 it is the epoch.
    """

    def __init__(self, evals_per_epoch: int = 1) -> None:
        self.evals_per_epoch = evals_per_epoch

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not logs or state.epoch is None:
            return
        step = eval_index(state.epoch, self.evals_per_epoch)
        if "loss" in logs:
            mlflow.log_metric("train_loss", float(logs["loss"]), step=step)
        evals = {k: float(v) for k, v in logs.items() if k in ("eval_loss", "eval_accuracy", "eval_macro_f1")}
        if evals:
            mlflow.log_metrics({**evals, "epoch": round(float(state.epoch), 3)}, step=step)


def log_trial_params(number: int, params: Mapping[str, Any], cfg: Config, **extra: Any) -> None:
    """Sampled and fixed parameters of one trial (or refit), flat and short."""
    mlflow.log_params(
        {
            **params,
            **extra,
            "trial_number": number,
            "model": cfg.model.name,
            "max_length": cfg.model.max_length,
            "precision": cfg.train.precision,
            "bf16": use_bf16(cfg.train.precision),
            "freeze_embeddings": cfg.train.freeze_embeddings,
            "evals_per_epoch": cfg.train.evals_per_epoch,
            "metric": cfg.train.metric,
            "seed": cfg.seed + number,
        }
    )


def log_study_summary(counts: Mapping[str, int], best: Any) -> None:
    """Counts by state, and the best trial's number, value and params (tags: they change on resume)."""
    log_metrics({**counts, "best_value": best.value, "best_trial": best.number})
    mlflow.set_tags({"best_trial": str(best.number), **{f"best.{k}": str(v) for k, v in best.params.items()}})
