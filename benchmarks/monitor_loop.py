"""The production loop on real AG News: traced answers, true labels fed back, `newscat monitor` on two windows.

The registered model is loaded in this process with NEWSCAT_TRACING=on, so its own tracer writes the traces, as under
`mlflow models serve` (without HTTP). Two windows of official test texts, each traced into its own experiment:

- `in_distribution`: --texts test texts in random order, title + description as users send them;
- `shifted`: --texts test texts of one class (--shift-class) sent as their titles alone (short texts), the kind of
  traffic change a desk that starts pushing sports headlines would cause.

In each window the true labels of the first --labelled texts are fed back with `attach_feedback` (rows/s measured),
then `monitor` judges the window (wall time measured). The test split only measures here: nothing is trained or
chosen. Prints JSON (with the monitor's summaries).

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python benchmarks/monitor_loop.py --target newscat@champion \\
        --data ../shared/data/ag_news --texts 2000 --labelled 500
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from provenance import provenance

from newscat.config import MonitorConfig


def test_rows(data: Path) -> pd.DataFrame:
    """The official test split: label name, title, description, and the text users send (title + description)."""
    names = (data / "classes.txt").read_text(encoding="utf-8").split()
    frame = pd.read_csv(data / "test.csv", header=None, names=["label", "title", "description"], dtype=str)
    frame["label"] = [names[int(v) - 1] for v in frame["label"]]
    frame["text"] = frame["title"].str.cat(frame["description"], sep=" ")
    return frame


def traced_window(model_uri: str, experiment: str, texts: list[str], batch: int) -> tuple[list[str], dict]:
    """Answer `texts` in requests of `batch` through the model's own tracer; prediction ids and the tracer's counts."""
    import mlflow

    os.environ.update(
        NEWSCAT_TRACING="on",
        NEWSCAT_TRACE_EXPERIMENT=experiment,
        NEWSCAT_TRACE_MODEL_URI=model_uri,
    )
    model = mlflow.pyfunc.load_model(model_uri)
    tracer = model.unwrap_python_model()._tracer
    while tracer.experiment_id is None:
        time.sleep(0.05)
    ids: list[str] = []
    began = time.perf_counter()
    for start in range(0, len(texts), batch):
        answer = model.predict(pd.DataFrame({"text": texts[start : start + batch]}))
        ids += list(answer["prediction_id"])
        if (start // batch) % 32 == 31:  # the tracer's queue holds 64 requests: let it catch up
            tracer.wait_idle(600)
    tracer.wait_idle(600)
    counts = {"seconds": round(time.perf_counter() - began, 1), **dict(tracer.counts)}
    return ids, counts


def window(args: argparse.Namespace, name: str, rows: pd.DataFrame) -> dict:
    from newscat.monitoring.feedback import attach_feedback
    from newscat.monitoring.monitor import monitor

    experiment = f"{args.experiment_prefix}-{name}-{int(time.time())}"
    ids, traced = traced_window(f"models:/{args.target}", experiment, rows["text"].tolist(), args.batch)
    labelled = [{"id": i, "label": label} for i, label in zip(ids, rows["label"], strict=True) if i][: args.labelled]
    began = time.perf_counter()
    report = attach_feedback(labelled, source="benchmark")
    feedback_s = time.perf_counter() - began
    assert not report.refused, report.text()
    began = time.perf_counter()
    result = monitor(args.target, MonitorConfig(experiment=experiment, since="1d"))
    monitor_s = time.perf_counter() - began
    acc = result.accuracy
    return {
        "experiment": experiment,
        "texts": len(rows),
        "traced": traced,
        "feedback_rows": len(labelled),
        "feedback_rows_per_s": round(len(labelled) / feedback_s, 1),
        "monitor_s": round(monitor_s, 1),
        "healthy": result.healthy,
        "problems": list(result.problems),
        "drift": {f.feature: [f.method, round(f.score, 4), f.threshold, f.drifted] for f in result.drift.features}
        if result.drift
        else None,
        "live_accuracy": [acc.accuracy, acc.low, acc.high, acc.labelled],
        "expected_accuracy_unlabelled": acc.expected,
        "test_accuracy": result.test_accuracy,
        "run_id": result.run_id,
        "summary": result.text(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="newscat@champion", help="NAME@ALIAS of the registered model")
    parser.add_argument("--data", required=True, help="AG News directory (test.csv, classes.txt)")
    parser.add_argument("--texts", type=int, default=2000, help="texts per window")
    parser.add_argument("--labelled", type=int, default=500, help="texts per window given true labels")
    parser.add_argument("--batch", type=int, default=8, help="texts per request")
    parser.add_argument("--shift-class", default="Sports", help="the one class of the shifted window")
    parser.add_argument("--experiment-prefix", default="newscat-loop", help="experiments the windows trace to")
    args = parser.parse_args()
    rows = test_rows(Path(args.data)).sample(frac=1.0, random_state=0)
    shifted = rows[rows["label"] == args.shift_class].head(args.texts).assign(text=lambda f: f["title"])
    result = {
        "benchmark": "monitor_loop",
        **provenance(),
        "target": args.target,
        "in_distribution": window(args, "in", rows.head(args.texts)),
        "shifted": window(args, "shifted", shifted),
    }
    print(json.dumps(result, indent=1, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))


if __name__ == "__main__":
    main()
