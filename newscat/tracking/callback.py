"""The Trainer callback that logs each evaluation's metrics to the active run."""

from __future__ import annotations

from typing import Any

import mlflow
from transformers import TrainerCallback

from newscat.config import eval_index


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
