"""The loop on real AG News, retrain included: live accuracy before and after a retrain on labelled live traffic.

The official test split is cut in two halves (by a seeded shuffle) so that nothing is both learned from and measured
on: the champion's own test split is the second half (title + description); the live traffic is news sent as
**titles alone** (a shift: the champion learned from title + description), the first half's titles before the
retrain, the second half's titles after it.

1. champion: `newscat tune` on the shared train.csv (--n-train rows, one trial, --epochs), promoted (no champion yet);
2. before: the first half's titles answered through the champion's own tracer (texts kept), all true labels fed
   back, `monitor`;
3. `retrain NAME@champion --promote auto`: the older labelled titles join the training rows, the newest
   --holdout-share are held out and gate the challenger (and the second half guards against regression);
4. after: the second half's titles answered by the old version and by the new champion, each traced into its own
   experiment, labels fed back, `monitor` on both: the same texts, the two versions side by side.

Writes its data folder under --work (never into the repository). Prints JSON.

    python benchmarks/retrain_loop.py --data ../shared/data/ag_news --work /tmp/retrain-loop
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from monitor_loop import test_rows, traced_window
from provenance import provenance

NAME = "newscat-loop"


def data_folder(data: Path, work: Path) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """The champion's data folder (official train rows; the second half of the test split as its test split) and
    the two halves (label name, title, description, text)."""
    rows = test_rows(data).sample(frac=1.0, random_state=0).reset_index(drop=True)
    first, second = rows.iloc[: len(rows) // 2], rows.iloc[len(rows) // 2 :]
    folder = work / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train.csv", "classes.txt"):
        (folder / name).write_bytes((data / name).read_bytes())
    names = (data / "classes.txt").read_text(encoding="utf-8").split()
    test = pd.DataFrame(
        {"label": [names.index(v) + 1 for v in second["label"]], "t": second["title"], "d": second["description"]}
    )
    test.to_csv(folder / "test.csv", header=False, index=False)
    return folder, first, second


def window(target: str, model_uri: str, experiment: str, rows: pd.DataFrame, batch: int) -> dict:
    """`rows`' titles answered and traced by `model_uri`, every true label fed back, `monitor` on `target`."""
    from newscat.config import MonitorConfig
    from newscat.monitoring.feedback import attach_feedback
    from newscat.monitoring.monitor import monitor

    ids, traced = traced_window(model_uri, experiment, rows["title"].tolist(), batch)
    labelled = [{"id": i, "label": label} for i, label in zip(ids, rows["label"], strict=True) if i]
    began = time.perf_counter()
    report = attach_feedback(labelled, source="benchmark")
    feedback_s = time.perf_counter() - began
    assert not report.refused, report.text()
    result = monitor(target, MonitorConfig(experiment=experiment, since="1d"))
    acc = result.accuracy
    return {
        "experiment": experiment,
        "texts": len(rows),
        "traced": traced,
        "feedback_rows_per_s": round(len(labelled) / feedback_s, 1),
        "healthy": result.healthy,
        "live_accuracy": [acc.accuracy, acc.low, acc.high, acc.labelled],
        "live_macro_f1": acc.macro_f1,
        "test_accuracy_at_release": result.test_accuracy,
        "summary": result.text(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="AG News directory (train.csv, test.csv, classes.txt)")
    parser.add_argument("--work", required=True, help="folder for the data folder, checkpoints and Optuna storage")
    parser.add_argument("--n-train", type=int, default=5000, help="training rows of the champion's trial")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the champion's (and the retrain's) trial")
    parser.add_argument("--holdout-share", type=float, default=0.3, help="newest labelled titles held out by retrain")
    parser.add_argument("--batch", type=int, default=16, help="texts per traced request")
    args = parser.parse_args()

    import mlflow

    from newscat.config import build_config
    from newscat.monitoring.retrain import retrain
    from newscat.training.job import tune_and_register

    os.environ["NEWSCAT_TRACE_TEXTS"] = "on"  # retrain learns from the texts the traces kept
    work = Path(args.work).resolve()
    folder, first, second = data_folder(Path(args.data), work)
    stamp = int(time.time())
    cfg = build_config(
        {
            "data": {"source": str(folder), "max_train_samples": args.n_train},
            "train": {"max_epochs": args.epochs, "work_dir": str(work / "runs"), "refit": False},
            "tune": {"n_trials": 1, "storage": f"sqlite:///{work}/optuna.db", "study_name": f"loop-{stamp}"},
            "promote": {"mode": "auto"},
            "retrain": {"since": "1d", "holdout_share": args.holdout_share},
            "monitor": {"experiment": f"{NAME}-before-{stamp}"},
            "registered_model": NAME,
            "experiment": NAME,
        },
        {},
        environ=os.environ,
    )
    result: dict = {"benchmark": "retrain_loop", **provenance(), "tracking_uri": mlflow.get_tracking_uri()}
    began = time.perf_counter()
    champion = tune_and_register(cfg)
    result["champion"] = {"version": champion.version, "test": champion.test_metrics, "seconds": _since(began)}
    result["before"] = window(f"{NAME}@champion", f"models:/{NAME}@champion", cfg.monitor.experiment, first, args.batch)

    began = time.perf_counter()
    outcome = retrain(f"{NAME}@champion", cfg, work_dir=work / "runs")
    result["retrain"] = {"seconds": _since(began), "promoted": outcome.promoted, "summary": outcome.text()}
    if outcome.promoted:
        new, old = f"{NAME}/{outcome.tuned.version}", f"{NAME}/{champion.version}"
        result["after"] = {
            version: window(version, f"models:/{version}", f"{NAME}-after-{tag}-{stamp}", second, args.batch)
            for tag, version in (("old", old), ("new", new))
        }
    print(json.dumps(result, indent=1, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))


def _since(began: float) -> float:
    return round(time.perf_counter() - began, 1)


if __name__ == "__main__":
    main()
