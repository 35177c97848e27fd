"""Pruning: the same seeded study without a pruner, with the median pruner and with Hyperband. Prints JSON.

Every study runs the real `newscat tune` path (temporary MLflow and Optuna stores, no refit) with the same seed,
data, search space and evaluation points (`--evals-per-epoch`, each one a pruning point); the sampler's first 10
trials are seeded random draws, so all studies propose the same configurations. Reported: optimizer steps spent
(epochs run x steps per epoch, summed over trials), best validation accuracy, and the registered model's test
accuracy.

    python benchmarks/pruning.py --data ../shared/data/ag_news --n-trials 8 --n-train 2000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import mlflow
import optuna
from provenance import provenance

from newscat.config import build_config
from newscat.training.job import tune_and_register


def run(pruner: str, args: argparse.Namespace, root: Path) -> dict:
    cfg = build_config(
        overrides={
            "data.source": args.data,
            "data.max_train_samples": args.n_train,
            "data.max_eval_samples": args.n_eval,
            "train.max_epochs": args.max_epochs,
            "train.evals_per_epoch": args.evals_per_epoch,
            "train.refit": False,
            "train.work_dir": str(root / "work"),
            "tune.n_trials": args.n_trials,
            "tune.pruner": pruner,
            "tune.study_name": f"pruning-{pruner}",
            "tune.storage": f"sqlite:///{root}/optuna.db",
            "registered_model": f"pruning-{pruner}",
            "experiment": "pruning-benchmark",
        }
    )
    began = time.perf_counter()
    outcome = tune_and_register(cfg)
    seconds = time.perf_counter() - began
    study = optuna.load_study(study_name=cfg.tune.study_name, storage=cfg.tune.storage)
    steps, epochs = 0, 0.0
    for trial in study.trials:
        per_epoch = math.ceil(args.n_train / int(trial.params.get("batch_size", 32)))
        trained = max(trial.intermediate_values, default=0) / args.evals_per_epoch  # epochs up to the last report
        steps += round(trained * per_epoch)
        epochs += trained
    return {
        "optimizer_steps": steps,
        "epochs_run": round(epochs, 2),
        "trials": dict(Counter(t.state.name.lower() for t in study.trials)),
        "best_val_accuracy": round(outcome.best_value, 4),
        "best_trial": outcome.best_trial,
        "test_accuracy": round(outcome.test_metrics["accuracy"], 4),
        "wall_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ag_news")
    parser.add_argument("--n-trials", type=int, default=8)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-eval", type=int, default=500)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--evals-per-epoch", type=int, default=2)
    parser.add_argument("--pruners", default="none,median,hyperband", help="comma-separated; the first is the base")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="newscat-pruning-") as tmp:
        root = Path(tmp)
        mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
        pruners = args.pruners.split(",")
        results = {pruner: run(pruner, args, root) for pruner in pruners}
    base = results[pruners[0]]
    report = {
        "benchmark": "pruning",
        **provenance(),
        "settings": vars(args),
        "results": results,
        "steps_saved_fraction": {
            p: round(1 - r["optimizer_steps"] / base["optimizer_steps"], 3)
            for p, r in results.items()
            if p != pruners[0]
        },
        "best_val_accuracy_delta_points": {
            p: round(100 * (r["best_val_accuracy"] - base["best_val_accuracy"]), 2)
            for p, r in results.items()
            if p != pruners[0]
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
