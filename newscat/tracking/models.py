"""Logged models: the served pyfunc with its card, and trial checkpoints (weights, tokenizer, trainer state)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from newscat.serving.artifacts import MODEL_FILES, pip_requirements, shipped_code
from newscat.serving.inputs import TEXT_COLUMN
from newscat.serving.model import SIGNATURE
from newscat.tracking.runs import log_metrics

# A trial's checkpoint: the files the served model is made of, plus the Trainer's state (no pickles).
CHECKPOINT_FILES = (*MODEL_FILES, "trainer_state.json")


def log_pyfunc(model_dir: Path, *, name: str = "model") -> Any:
    """Log the classifier as a pyfunc model in the active run; returns MLflow's ModelInfo."""
    example = pd.DataFrame({TEXT_COLUMN: ["Stocks rally as oil prices fall", "Striker scores twice in cup final win"]})
    with tempfile.TemporaryDirectory(prefix="newscat-code-") as tmp:
        code = shipped_code(Path(tmp))  # only the serving code goes inside the model
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(code / "serving" / "entry.py"),  # models-from-code: nothing pickled
            artifacts={"classifier": str(model_dir)},
            code_paths=[str(code)],
            signature=SIGNATURE,
            input_example=example,
            pip_requirements=pip_requirements(),
        )


def load_model(model_uri: str) -> Any:
    """Load a logged or registered model as a pyfunc (any URI MLflow understands)."""
    return mlflow.pyfunc.load_model(model_uri)


def log_model_card(model_id: str, card: str) -> None:
    """The model card as README.md inside the logged model, and in the active run."""
    with tempfile.TemporaryDirectory(prefix="newscat-card-") as tmp:
        path = Path(tmp) / "README.md"
        path.write_text(card, encoding="utf-8")
        MlflowClient().log_model_artifact(model_id, str(path))
    mlflow.log_text(card, "model_card.md")


def log_trial_result(best_metrics: Mapping[str, float], best_epoch: float | None, checkpoint: Path | None) -> None:
    """A complete trial's best-epoch metrics and its checkpoint."""
    log_metrics({**best_metrics, "epoch": best_epoch or 0}, prefix="best_")
    if checkpoint is not None:
        log_checkpoint(checkpoint)


def log_checkpoint(checkpoint: Path, artifact_path: str = "checkpoint") -> None:
    """Log the best epoch's weights, tokenizer and trainer state (no pickles) to the active run."""
    for name in CHECKPOINT_FILES:
        if (checkpoint / name).is_file():
            mlflow.log_artifact(str(checkpoint / name), artifact_path=artifact_path)


def download_checkpoint(run_id: str, target: Path, artifact_path: str = "checkpoint") -> Path:
    """Fetch a trial's logged checkpoint (it may come from an earlier process or another worker)."""
    target.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(target)))
