"""Every serving path of one model on the whole official AG News test split (title + description items):
accuracy, agreement with torch fp32, texts/s over the whole split (length-sorted batches, as served), and the median
latency of one item. Prints JSON.

The paths are the accuracy gate's (torch fp32, ONNX int8, ONNX fp32, torch bf16) plus torch's own dynamic int8 for
comparison. A model logged before the ONNX backend gets its graphs exported here first (as `newscat tune` does).

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python benchmarks/serving_paths.py --model-uri models:/newscat@champion
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
from provenance import provenance

from newscat.config import DataConfig
from newscat.data.load import load_news
from newscat.export.onnx import export_onnx
from newscat.serving.backends import ONNX_DIR, load_engine
from newscat.serving.model import class_probabilities
from newscat.serving.tokens import TokenEncoder

PATHS = ("torch/fp32", "onnx/int8", "onnx/fp32", "torch/bf16", "torch/int8")


def measure(model_dir: Path, path: str, texts: list[str], labels: np.ndarray, reference: np.ndarray | None) -> dict:
    backend, precision = path.split("/")
    engine = load_engine(model_dir, backend, precision, "cpu")
    encoder = TokenEncoder(model_dir, json.loads((model_dir / "newscat.json").read_text())["max_length"])
    class_probabilities(encoder, engine, texts[:64])  # warm-up
    began = time.perf_counter()
    predicted = class_probabilities(encoder, engine, texts)[0].argmax(axis=1)
    seconds = time.perf_counter() - began
    timings = []
    for i in range(200):
        start = time.perf_counter()
        class_probabilities(encoder, engine, [texts[i]])
        timings.append(time.perf_counter() - start)
    return {
        "test_accuracy": round(float((predicted == labels).mean()), 4),
        "agreement_with_torch_fp32": round(float((predicted == reference).mean()), 4) if reference is not None else 1.0,
        "test_texts_per_s": round(len(texts) / seconds, 1),
        "one_item_p50_ms": round(1000 * statistics.median(timings), 2),
        "predicted": predicted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", default="models:/newscat@champion")
    parser.add_argument("--data", default="../shared/data/ag_news", help="AG News directory (its test split)")
    parser.add_argument("--paths", default=",".join(PATHS))
    args = parser.parse_args()
    data = load_news(DataConfig(source=args.data), seed=0)
    texts, labels = data.test["text"].tolist(), data.test["label"].to_numpy()
    work = Path(tempfile.mkdtemp(prefix="newscat-paths-"))
    source = Path(mlflow.artifacts.download_artifacts(args.model_uri, dst_path=str(work / "model")))
    model_dir = Path(shutil.copytree(source / "artifacts" / "classifier", work / "classifier"))
    exported = not (model_dir / ONNX_DIR).is_dir()
    if exported:
        export_onnx(model_dir)
    results: dict[str, dict] = {}
    reference = None
    for path in args.paths.split(","):
        result = measure(model_dir, path, texts, labels, reference)
        if path == "torch/fp32":
            reference = result["predicted"]
        result.pop("predicted")
        results[path] = result
        print(json.dumps({path: result}), flush=True)
    base = results["torch/fp32"]
    report = {
        "benchmark": "serving_paths",
        **provenance(),
        "model_uri": args.model_uri,
        "onnx_exported_here": exported,
        "test_items": len(texts),
        "results": results,
        "vs_torch_fp32": {
            path: {
                "accuracy_delta_points": round(100 * (r["test_accuracy"] - base["test_accuracy"]), 2),
                "throughput_speedup": round(r["test_texts_per_s"] / base["test_texts_per_s"], 2),
                "one_item_latency_ratio": round(r["one_item_p50_ms"] / base["one_item_p50_ms"], 2),
            }
            for path, r in results.items()
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
