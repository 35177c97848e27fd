"""Pruning: the same seeded study without a pruner and with newscat's pruners. Prints JSON.

Every study runs the real `newscat tune` path (temporary MLflow and Optuna stores, no refit) with the same seed,
data, search space and evaluation points (`--evals-per-epoch`, each one a pruning point); the sampler's first 10
trials are seeded random draws, so all studies propose the same configurations. Reported: optimizer steps spent
(epochs run x steps per epoch, summed over trials), best validation accuracy, and the registered model's test
accuracy.

Each trial's learning curve (its validation accuracy at every evaluation point) is recorded. `--replay` replays
pruners on the first study's curves, trial by trial as the study ran them (the same configurations, the same curves:
training is seeded and an evaluation changes nothing): what each pruner would have stopped, at no training cost.
A spec is pruner@evals_per_epoch (median, racing, halving, hyperband, percentileP: keep the top P%, patientP:
the median pruner asked only after P points without improvement, or racingZ: racing at Z standard errors, not 2),
read at every k-th point of the recorded ones.
Replayed figures are labelled as such; the studies above them ran for real.
`--replay-sizes` replays every spec on the first k recorded trials too (what a k-trial study would have saved: the
sampler's first 10 draws do not depend on pruning). `--curves FILE` replays on the unpruned study of an earlier results
file instead of running one (its rows, epochs and points replace the flags); nothing is trained.

    python benchmarks/pruning.py --data ../shared/data/ag_news --n-trials 8 --n-train 2000
    python benchmarks/pruning.py --n-trials 6 --n-train 1000 --max-epochs 2 --evals-per-epoch 4 \
        --pruners none,halving --replay median@2,median@4,halving@2,halving@4,percentile25@4
    python benchmarks/pruning.py --n-trials 12 --n-train 1000 --max-epochs 2 --evals-per-epoch 4 \
        --pruners none,median --replay median@2,median@4,halving@4,percentile25@4 --replay-sizes 4,6,8,10
    python benchmarks/pruning.py --n-trials 12 --n-train 1000 --max-epochs 2 --evals-per-epoch 4 \
        --pruners none,racing --replay racing@2,racing@4,median@2,median@4,halving@4 --replay-sizes 4,6,8,10
    python benchmarks/pruning.py --curves benchmarks/results/2026-12-03-pruning_racing.json \
        --replay racing@4,median@4,patient1@4,patient2@4,halving@4,hyperband@4,percentile25@4 --replay-sizes 6,8,10
    python benchmarks/pruning.py --curves benchmarks/results/2026-12-03-pruning_racing.json \
        --replay racing0.5@4,racing1@4,racing1.5@4,racing@4,racing2.5@4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
import warnings
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
            # No time budget: the job's default one (1,200 s) cut the study short on a slow CPU, and each study must
            # run all of its trials for the steps to compare.
            "tune.timeout": 0,
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
        trained = max(trial.intermediate_values, default=0) / args.evals_per_epoch  # epochs up to the last report
        steps += round(trained * steps_per_epoch(args.n_train, trial.params))
        epochs += trained
    return {
        "optimizer_steps": steps,
        "epochs_run": round(epochs, 2),
        "trials": dict(Counter(t.state.name.lower() for t in study.trials)),
        "best_val_accuracy": round(outcome.best_value, 4),
        "best_trial": outcome.best_trial,
        "test_accuracy": round(outcome.test_metrics["accuracy"], 4),
        "wall_seconds": round(seconds, 1),
        "curves": [
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "params": t.params,
                "value": t.value,
                "accuracy_at": {int(k): round(v, 4) for k, v in sorted(t.intermediate_values.items())},
            }
            for t in study.trials
        ],
    }


def steps_per_epoch(n_train: int, params: dict) -> int:
    return math.ceil(n_train / int(params.get("batch_size", 32)))


def replay_pruner(spec: str, max_evals: int, n_validation: int) -> optuna.pruners.BasePruner:
    """A pruner as the study would build it (newscat's own settings), percentileP, patientP (the median pruner
    asked only after P evaluations without improvement), or racingZ (racing at Z standard errors, not 2)."""
    from newscat.config import TuneConfig
    from newscat.training.racing import RacingPruner
    from newscat.training.study import make_pruner

    if spec.startswith("percentile"):
        return optuna.pruners.PercentilePruner(float(spec.removeprefix("percentile")), n_startup_trials=1)
    if spec.startswith("patient"):
        with warnings.catch_warnings():  # experimental since Optuna 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            median = make_pruner(TuneConfig(pruner="median"), max_evals)
            return optuna.pruners.PatientPruner(median, patience=int(spec.removeprefix("patient")))
    if spec.startswith("racing") and spec != "racing":
        return RacingPruner(n_validation, float(spec.removeprefix("racing")), TuneConfig().pruner_startup_trials)
    return make_pruner(TuneConfig(pruner=spec), max_evals, n_validation)


def recorded_base(path: str, args: argparse.Namespace) -> dict:
    """The unpruned study of an earlier results file, whose settings (rows, epochs, points) replace the flags."""
    saved = json.loads(Path(path).read_text())
    for key in ("data", "n_trials", "n_train", "n_eval", "max_epochs", "evals_per_epoch", "pruners"):
        setattr(args, key, saved["settings"][key])
    base = saved["results"][saved["settings"]["pruners"].split(",")[0]]
    for curve in base["curves"]:
        curve["accuracy_at"] = {int(k): v for k, v in curve["accuracy_at"].items()}  # JSON keys are strings
    return base


def validation_rows(args: argparse.Namespace) -> int:
    """The validation rows the studies scored: `--n-eval` at most, fewer where the data holds fewer (racing's noise
    is computed from them, as the job does)."""
    from newscat.config import DataConfig
    from newscat.data.load import load_news

    if not Path(getattr(args, "data", None) or "/nonexistent").is_dir():  # synthetic curves: no data behind them
        return args.n_eval
    data = DataConfig(source=args.data, max_train_samples=args.n_train, max_eval_samples=args.n_eval)
    return len(load_news(data, seed=0).validation)


def replay(spec: str, curves: list[dict], args: argparse.Namespace) -> dict:
    """Feed the recorded curves, in trial order, to a fresh study with `spec` = pruner@evals_per_epoch."""
    name, evals = spec.split("@")
    every = args.evals_per_epoch // int(evals)
    if every < 1 or args.evals_per_epoch % int(evals):
        raise SystemExit(f"--replay {spec}: {evals} must divide --evals-per-epoch {args.evals_per_epoch}")
    # Named as the real run's study: Hyperband assigns each trial's bracket by a hash of the study's name.
    pruner = replay_pruner(name, args.max_epochs * int(evals), validation_rows(args))
    study = optuna.create_study(study_name=f"pruning-{name}", direction="maximize", pruner=pruner)
    steps, epochs, best, states = 0, 0.0, float("-inf"), Counter()
    for curve in curves:
        points = {k // every: v for k, v in curve["accuracy_at"].items() if k % every == 0}
        trial, last, pruned = study.ask(), 0, False
        for step in sorted(points):
            trial.report(points[step], step)
            last = step
            if trial.should_prune():
                pruned = True
                break
        # The trial's value is its best evaluation up to where it stopped (its best checkpoint).
        value = max(points[k] for k in points if k <= last)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED) if pruned else study.tell(trial, value)
        states["pruned" if pruned else "complete"] += 1
        best = max(best, value)
        trained = last / int(evals)
        steps += round(trained * steps_per_epoch(args.n_train, curve["params"]))
        epochs += trained
    return {"optimizer_steps": steps, "epochs_run": round(epochs, 2), "trials": dict(states), "best_val_accuracy": best}


def replay_by_size(specs: list[str], base: dict, sizes: list[int], args: argparse.Namespace) -> dict:
    """Each spec replayed on the first k recorded trials, against those k trials run in full."""
    report: dict = {}
    for k in sizes:
        curves = base["curves"][:k]
        full = sum(
            round(max(c["accuracy_at"]) / args.evals_per_epoch * steps_per_epoch(args.n_train, c["params"]))
            for c in curves
        )
        best = max(c["value"] for c in curves if c["value"] is not None)
        report[str(k)] = {"full_optimizer_steps": full, "best_val_accuracy": best}
        for spec in specs:
            r = replay(spec, curves, args)
            report[str(k)][spec] = {
                "optimizer_steps": r["optimizer_steps"],
                "steps_saved_fraction": round(1 - r["optimizer_steps"] / full, 3),
                "best_val_accuracy_delta_points": round(100 * (r["best_val_accuracy"] - best), 2),
            }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ag_news")
    parser.add_argument("--n-trials", type=int, default=8)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-eval", type=int, default=500)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--evals-per-epoch", type=int, default=2)
    parser.add_argument("--pruners", default="none,median,hyperband", help="comma-separated; the first is the base")
    parser.add_argument("--replay", default="", help="pruner@evals_per_epoch specs replayed on the base's curves")
    parser.add_argument("--replay-sizes", default="", help="comma-separated k: replay on the base's first k trials")
    parser.add_argument("--curves", default="", help="a results file: replay on its unpruned study, run nothing")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.curves:
        pruners, results = ["recorded"], {"recorded": recorded_base(args.curves, args)}
    else:
        pruners = args.pruners.split(",")
        with tempfile.TemporaryDirectory(prefix="newscat-pruning-") as tmp:
            root = Path(tmp)
            mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
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
        # Evaluations and model logging cost time too: the studies' wall-clock time against the base's.
        "wall_seconds_ratio": {
            p: round(r["wall_seconds"] / base["wall_seconds"], 3) for p, r in results.items() if p != pruners[0]
        },
    }
    if args.replay:
        replayed = {spec: replay(spec, base["curves"], args) for spec in args.replay.split(",")}
        report["replayed_on_base_curves"] = {
            spec: {
                **r,
                "steps_saved_fraction": round(1 - r["optimizer_steps"] / base["optimizer_steps"], 3),
                "best_val_accuracy_delta_points": round(100 * (r["best_val_accuracy"] - base["best_val_accuracy"]), 2),
            }
            for spec, r in replayed.items()
        }
        if args.replay_sizes:
            sizes = [int(k) for k in args.replay_sizes.split(",")]
            report["replayed_by_study_size"] = replay_by_size(args.replay.split(","), base, sizes, args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
