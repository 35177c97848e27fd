"""Where one news item's time goes inside the served pyfunc, in-process (no HTTP): the whole `predict` (DataFrame in,
answers out, through the request batcher), the model's scoring alone (tokenizing, the engine, the lexical companion,
the mix), and the engine's forward pass alone on the already padded ids. Each item takes the three in turn, so a
drift of the machine hits all three alike. Per-item medians in ms and their ratios to the engine. Prints JSON.

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python benchmarks/pyfunc_overhead.py --model-uri models:/newscat@champion
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import pandas as pd
from provenance import emit, provenance


def timed(call: object, *args: object) -> float:
    """Milliseconds one call takes."""
    began = time.perf_counter()
    call(*args)
    return (time.perf_counter() - began) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", default="models:/newscat@champion", help="newscat pyfunc model URI")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ag_news"), help="AG News folder (test.csv)")
    parser.add_argument("--items", type=int, default=1000, help="news items timed, one at a time")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    import mlflow

    from newscat.data.text import join_fields
    from newscat.serving.inputs import CHARS_PER_TOKEN_CAP
    from newscat.serving.model import recorded_path_loads

    with (args.data / "test.csv").open(encoding="utf-8", newline="") as handle:
        texts = [join_fields(title, body) for _, title, body in csv.reader(handle)][: args.items]
    with recorded_path_loads():  # the path the model records, as the scoring server serves it
        model = mlflow.pyfunc.load_model(args.model_uri)
    python_model = model.unwrap_python_model()
    scorer = python_model.scorer
    for text in texts[:50]:  # warm-up: the engine's first passes allocate
        model.predict(pd.DataFrame({"text": [text]}))
    times: dict[str, list[float]] = {"predict": [], "scoring": [], "engine": []}
    for text in texts:
        encoded, _ = scorer.encoder.encode([text], max_chars=scorer.max_length * CHARS_PER_TOKEN_CAP)
        padded = scorer.encoder.pad(encoded)
        times["predict"].append(timed(model.predict, pd.DataFrame({"text": [text]})))
        times["scoring"].append(timed(scorer.scores, [text]))
        times["engine"].append(timed(scorer.engine, *padded))
    medians = {k: round(statistics.median(v), 3) for k, v in times.items()}
    result = {
        "benchmark": "pyfunc_overhead",
        **provenance(),
        "model_uri": args.model_uri,
        "engine": str(python_model.choice),
        "companion": scorer.lexical is not None,
        "items": len(texts),
        "median_ms_per_item": medians,
        "vs_engine": {k: round(v / medians["engine"], 2) for k, v in medians.items()},
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
