"""Pruning: the same seeded study with and without the median pruner. Prints JSON.

Both studies run the real `newscat tune` path (temporary MLflow and Optuna stores) with the same seed, data and
search space; the sampler's first 10 trials are seeded random draws, so both studies propose the same
configurations. Reported: optimizer steps spent (epochs run x steps per epoch, summed over trials), best
validation accuracy, and the registered model's test accuracy.

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

from newscat.config import build_config
from newscat.pipeline import tune_and_register


def run(pruner: str, args: argparse.Namespace, root: Path) -> dict:
    cfg = build_config(
        overrides={
            "data.source": args.data,
            "data.max_train_samples": args.n_train,
            "data.max_eval_samples": args.n_eval,
            "train.max_epochs": args.max_epochs,
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
    steps = 0
    for trial in study.trials:
        per_epoch = math.ceil(args.n_train / int(trial.params.get("batch_size", 32)))
        steps += len(trial.intermediate_values) * per_epoch
    return {
        "optimizer_steps": steps,
        "epochs_run": sum(len(t.intermediate_values) for t in study.trials),
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
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="newscat-pruning-") as tmp:
        root = Path(tmp)
        mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
        results = {pruner: run(pruner, args, root) for pruner in ("none", "median")}
    without, with_ = results["none"], results["median"]
    report = {
        "benchmark": "pruning",
        "settings": vars(args),
        "results": results,
        "steps_saved_fraction": round(1 - with_["optimizer_steps"] / without["optimizer_steps"], 3),
        "best_val_accuracy_delta_points": round(100 * (with_["best_val_accuracy"] - without["best_val_accuracy"]), 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
