"""Inference precision: the same registered pyfunc loaded as fp32, bf16 (autocast) and int8 (dynamic quantization),
each scoring the whole official AG News test split and one headline repeatedly. Prints JSON.

The switch is the documented `NEWSCAT_PRECISION` environment variable, read when the model loads.

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python benchmarks/precision.py --model-uri models:/newscat@champion
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import mlflow
import numpy as np
import pandas as pd

from newscat.config import DataConfig
from newscat.data.load import load_news
from newscat.serving.precision import PRECISION_ENV


def measure(model_uri: str, precision: str, texts: list[str], labels: np.ndarray, names: tuple[str, ...]) -> dict:
    os.environ[PRECISION_ENV] = precision
    model = mlflow.pyfunc.load_model(model_uri)
    began = time.perf_counter()
    predicted = model.predict(pd.DataFrame({"text": texts}))["label"]
    seconds = time.perf_counter() - began
    to_id = {name: i for i, name in enumerate(names)}
    accuracy = float(np.mean(predicted.map(to_id).to_numpy() == labels))
    one = pd.DataFrame({"text": [texts[0]]})
    for _ in range(20):
        model.predict(one)
    timings = []
    for _ in range(200):
        start = time.perf_counter()
        model.predict(one)
        timings.append(time.perf_counter() - start)
    return {
        "test_accuracy": round(accuracy, 4),
        "test_texts_per_s": round(len(texts) / seconds, 1),
        "single_headline_p50_ms": round(1000 * statistics.median(timings), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", default="models:/newscat@champion")
    parser.add_argument("--data", default="../shared/data/ag_news", help="AG News directory (its test split)")
    parser.add_argument("--precisions", default="fp32,bf16,int8")
    args = parser.parse_args()
    data = load_news(DataConfig(source=args.data), seed=0)
    texts, labels = data.test["text"].tolist(), data.test["label"].to_numpy()
    results = {}
    for precision in args.precisions.split(","):
        results[precision] = measure(args.model_uri, precision, texts, labels, data.label_names)
        print(json.dumps({precision: results[precision]}), flush=True)
    base = results.get("fp32")
    report = {"benchmark": "precision", "model_uri": args.model_uri, "test_rows": len(texts), "results": results}
    if base:
        report["vs_fp32"] = {
            name: {
                "accuracy_delta_points": round(100 * (r["test_accuracy"] - base["test_accuracy"]), 2),
                "throughput_speedup": round(r["test_texts_per_s"] / base["test_texts_per_s"], 2),
                "latency_speedup": round(base["single_headline_p50_ms"] / r["single_headline_p50_ms"], 2),
            }
            for name, r in results.items()
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
