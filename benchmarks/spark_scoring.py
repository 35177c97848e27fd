"""Batch scoring rows/s: one process (the pyfunc in this process, batches of 256) vs Spark (`mlflow.pyfunc.spark_udf`
on a local session), same model, same rows, one after the other in one run. Prints JSON.

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python benchmarks/spark_scoring.py --model-uri models:/newscat@champion \
        --data ../shared/data/ag_news/test.csv --master 'local[2]' --partitions 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import pandas as pd
from provenance import provenance


def single_process(model_uri: str, texts: list[str], batch_size: int = 256) -> tuple[float, list[str]]:
    """Seconds to score `texts` in this process (model loading included), and the labels."""
    from newscat.tracking.models import load_model as load

    began = time.perf_counter()
    model = load(model_uri)
    labels: list[str] = []
    for start in range(0, len(texts), batch_size):
        labels += model.predict(pd.DataFrame({"text": texts[start : start + batch_size]}))["label"].tolist()
    return time.perf_counter() - began, labels


def on_spark(model_uri: str, source: str, master: str, partitions: int) -> tuple[float, float, list[str]]:
    """Seconds to start the session, seconds to score every row (UDF creation and model loading included), labels."""
    from newscat.batch.spark import read_frame, score_frame, spark_session

    began = time.perf_counter()
    spark = spark_session(master)
    spark.range(1).count()  # the JVM and a first task are up
    started = time.perf_counter()
    texts = read_frame(spark, source, layout="ag_news").repartition(partitions)
    rows = score_frame(spark, texts, model_uri).select("row", "label").collect()
    scored = time.perf_counter()
    spark.stop()
    return started - began, scored - started, [r["label"] for r in sorted(rows, key=lambda r: r["row"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", default="models:/newscat@champion")
    parser.add_argument("--data", default="../shared/data/ag_news/test.csv", help="AG News CSV (headerless)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--partitions", type=int, default=2)
    args = parser.parse_args()

    from newscat.batch.files import read_texts

    texts = read_texts(args.data, "text", "ag_news")
    single_s, single_labels = single_process(args.model_uri, texts)
    startup_s, spark_s, spark_labels = on_spark(args.model_uri, args.data, args.master, args.partitions)
    agree = sum(a == b for a, b in zip(single_labels, spark_labels, strict=True)) / len(texts)
    report = {
        "benchmark": "spark_scoring",
        **provenance(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}",
        "model_uri": args.model_uri,
        "rows": len(texts),
        "precision": os.environ.get("NEWSCAT_PRECISION", "auto"),
        "single_process": {"seconds": round(single_s, 1), "rows_per_s": round(len(texts) / single_s, 1)},
        "spark": {
            "master": args.master,
            "partitions": args.partitions,
            "session_start_s": round(startup_s, 1),
            "seconds": round(spark_s, 1),
            "rows_per_s": round(len(texts) / spark_s, 1),
        },
        "spark_over_single_rows_per_s": round(single_s / spark_s, 2),
        "label_agreement": round(agree, 5),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
