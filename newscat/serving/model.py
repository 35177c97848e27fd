"""The served model: a custom MLflow PythonModel over safetensors weights and a tokenizer.

This package (with `newscat.data.text`) is the only code shipped inside a logged model: it imports no training,
tuning or tracking code.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from newscat.serving.artifacts import SETTINGS_FILE, verify_files
from newscat.serving.backends import Engine, load_engine
from newscat.serving.batching import Batcher
from newscat.serving.choice import Choice, Platform, resolve
from newscat.serving.inputs import CHARS_PER_TOKEN_CAP, MAX_BATCH, MAX_BATCH_ENV, invalid, max_batch, texts_from
from newscat.serving.lexical import LexicalModel, mix, prepare_texts
from newscat.serving.tokens import TokenEncoder, UnreadableText
from newscat.serving.tracing import (
    PREDICTION_ID_COLUMN,
    TRACING_ENV,
    Tracer,
    TraceSettings,
    close_on_sigterm,
    in_scoring_server,
    tracing_asked,
)

log = logging.getLogger("newscat")
# In the model's settings: the LoggedModel its files were logged as (written into the logged copy only), so that a
# served model links its traces to itself without being told which model it is.
LOGGED_MODEL_KEY = "logged_model_id"
# Set while newscat loads a model to decide or record with it (evaluate, check, promote, the release check): the
# model then scores on its recorded path whatever NEWSCAT_BACKEND, NEWSCAT_PRECISION or NEWSCAT_DEVICE say.
_RECORDED_PATH: contextvars.ContextVar[bool] = contextvars.ContextVar("newscat_recorded_path", default=False)

# Padded tokens per forward pass. Measured on a 2-core AMD EPYC (ONNX int8, batches of 128 news items merged from
# concurrent requests): 352 texts/s at 512 tokens, 312 at 2,048, 193 with fixed batches of 64 texts; titles alone
# run 64 to a batch.
TOKENS_PER_BATCH = 512


@dataclass(frozen=True)
class Scores:
    """What a model answers to a list of texts, and the parts it is mixed from."""

    probabilities: np.ndarray  # texts x classes: the served answer (the encoder's, mixed with the companion's)
    encoder: np.ndarray  # the encoder's alone, on the serving engine
    lexical: np.ndarray | None  # the companion's alone (None: the model has none)
    truncated: np.ndarray  # per text: tokens beyond max_length were cut off


class Scorer:
    """The one computation of what a model folder answers: its engine's probabilities mixed with the lexical
    companion's. The served pyfunc, the release report and the model card all go through it.

    Each text's answer depends on that text alone: batches are padded with a mask and every engine the gate can
    choose quantizes nothing per batch, so who else was in the batch changes nothing.
    """

    def __init__(self, model_dir: Path, env: Mapping[str, str] | None = None) -> None:
        """Load the folder's files (their SHA-256 checked) on the engine `env` (default: os.environ) selects:
        with no NEWSCAT_* override, the recorded default path."""
        settings = json.loads((model_dir / SETTINGS_FILE).read_text(encoding="utf-8"))
        verify_files(model_dir, settings)
        self.model_dir = model_dir
        self.settings = settings
        self.max_length = int(settings["max_length"])
        self.tokens_per_batch = int(settings.get("tokens_per_batch", TOKENS_PER_BATCH))
        self.label_names = _label_names(model_dir)
        self.encoder = TokenEncoder(model_dir, self.max_length)
        self.choice: Choice = resolve(settings.get("serving", {}), Platform.detect(), env)
        self.engine = load_engine(model_dir, self.choice.backend, self.choice.precision, self.choice.device)
        lexical = settings.get("lexical")  # the TF-IDF companion, when it won on validation
        self.lexical = LexicalModel.load(model_dir, float(lexical["weight"])) if lexical else None
        if self.lexical is not None and self.lexical.coef.shape[0] != len(self.label_names):
            raise ValueError(
                f"{model_dir}: the lexical companion has {self.lexical.coef.shape[0]} classes, the model "
                f"{len(self.label_names)}"
            )

    def scores(self, texts: list[str]) -> Scores:
        """The served probabilities of `texts` and their parts."""
        if not texts:
            empty = np.zeros((0, len(self.label_names)))
            return Scores(empty, empty, None if self.lexical is None else empty, np.zeros(0, dtype=bool))
        encoder, truncated = class_probabilities(self.encoder, self.engine, texts, self.tokens_per_batch)
        if self.lexical is None:
            return Scores(encoder, encoder, None, truncated)
        lexical = self.lexical.probabilities(prepare_texts(texts, self.max_length * CHARS_PER_TOKEN_CAP))
        return Scores(mix(encoder, lexical, self.lexical.weight), encoder, lexical, truncated)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """What the model answers: texts x classes, each row summing to 1."""
        return self.scores(texts).probabilities


@contextlib.contextmanager
def recorded_path_loads() -> Iterator[None]:
    """Models loaded (through MLflow's pyfunc loader, in this thread) inside the block serve their recorded path:
    the NEWSCAT_BACKEND / NEWSCAT_PRECISION / NEWSCAT_DEVICE overrides in the environment are not read. For every
    load whose answers decide something or become a model's metrics."""
    token = _RECORDED_PATH.set(True)
    try:
        yield
    finally:
        _RECORDED_PATH.reset(token)


class NewsClassifier(mlflow.pyfunc.PythonModel):
    """Loads once; predicts a topic, its probability and every class probability per text."""

    def load_context(self, context: Any) -> None:
        self.recorded_path = _RECORDED_PATH.get()  # read by `load_recorded`: this load ignored the overrides
        self.scorer = Scorer(Path(context.artifacts["classifier"]), env={} if self.recorded_path else None)
        self.logged_max_batch = int(self.scorer.settings.get("max_batch", MAX_BATCH))
        max_batch(self.logged_max_batch)  # a bad NEWSCAT_MAX_BATCH fails at startup, not on the first request
        self.label_names = self.scorer.label_names
        self.choice = self.scorer.choice
        self._batcher = Batcher(self._forward)
        self._tracer = _tracer(self.scorer, str(self.choice))  # None unless served with NEWSCAT_TRACING=on
        # One line on the server's console says which engine answers and why (the scoring server configures no
        # logging): the recorded default, a fallback this machine forced, or an operator's override.
        print(f"newscat model serves with {self.choice}: {self.choice.reason}", file=sys.stderr, flush=True)

    # Annotated as DataFrame (MLflow would build an input schema from a list[str] hint); the server may also hand
    # over a dict of arrays or an array, as parsed from the JSON, which `_texts_from` checks.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        start_ns = time.time_ns()
        texts = texts_from(model_input)
        limit = max_batch(self.logged_max_batch)
        if limit is not None and len(texts) > limit:
            raise invalid(
                f"{len(texts)} texts in one request; the limit is {limit} ({MAX_BATCH_ENV} on the server): "
                "split them into smaller requests"
            )
        try:
            probabilities, truncated = self._batcher.submit(texts)
        except UnreadableText as exc:  # a pass that fails is rerun per request: the row is this request's
            raise invalid(f"{exc}; send it as plain UTF-8 text") from None
        best = probabilities.argmax(axis=1) if len(texts) else np.empty(0, dtype=int)
        answer = pd.DataFrame(
            {
                "label": [self.label_names[i] for i in best],
                "score": probabilities[np.arange(len(texts)), best].astype(float),
                "probabilities": [dict(zip(self.label_names, map(float, row), strict=True)) for row in probabilities],
                "truncated": truncated.astype(bool),
            }
        )
        if getattr(self, "_tracer", None) is not None and len(texts):
            # The column exists only with tracing on (older clients never see it); None where a request went
            # untraced (sampling, the tracer's CPU budget, an unreachable store).
            ids = self._tracer.record(texts, probabilities, truncated, start_ns=start_ns)
            answer[PREDICTION_ID_COLUMN] = ids if ids is not None else [None] * len(texts)
        return answer

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities, shape (len(texts), n_classes).

        Concurrent callers (the scoring server runs each request in a thread) share forward passes.
        """
        return self._batcher.submit(texts)[0]

    def _forward(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Runs on the batcher's thread: probabilities and truncation flags of the merged requests' texts."""
        scores = self.scorer.scores(texts)
        return scores.probabilities, scores.truncated


def _tracer(scorer: Scorer, engine: str) -> Tracer | None:
    """The request tracer NEWSCAT_TRACING=on asks for (its settings checked now, at load), else None.

    Only MLflow's scoring server (`mlflow models serve`) traces: an in-process load (evaluate, promote, predict, a
    notebook, Spark's local workers) would record test rows or batch jobs as live traffic, which monitor and retrain
    read later.
    """
    if not in_scoring_server():
        if tracing_asked():
            log.info(
                "%s=on is honoured by `mlflow models serve` only: this in-process load traces nothing", TRACING_ENV
            )
        return None
    settings = TraceSettings.from_env()
    if settings is None:
        return None
    attributes = {"newscat.engine": engine, "newscat.max_length": str(scorer.max_length)}
    tracer = Tracer(
        settings,
        label_names=scorer.label_names,
        tokenizer=scorer.model_dir,
        max_length=scorer.max_length,
        attributes=attributes,
        model_id=scorer.settings.get(LOGGED_MODEL_KEY) or None,
    )
    close_on_sigterm(tracer)  # a server stopped by SIGTERM closes it too, not only one that exits
    return tracer


def class_probabilities(
    encoder: TokenEncoder, engine: Engine, texts: list[str], tokens_per_batch: int = TOKENS_PER_BATCH
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of `texts` and, per text, whether tokens beyond `max_length` were cut off.

    Texts are sorted by length and cut into batches of at most `tokens_per_batch` padded tokens (and 64 texts), so
    that no batch pads short texts to a long one's length and each fits the CPU's caches. A `per_text` engine gets
    one text per pass, so that its answer never depends on the other texts.
    """
    encoded, truncated = encoder.encode(texts, max_chars=encoder.max_length * CHARS_PER_TOKEN_CAP)
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    out: np.ndarray | None = None
    max_rows = 1 if getattr(engine, "per_text", False) else 64
    for rows in token_batches([len(encoded[i]) for i in order], tokens_per_batch, max_rows):
        rows = order[rows]
        logits = engine(*encoder.pad([encoded[i] for i in rows])).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)  # a stable softmax
        exp = np.exp(logits)
        if out is None:
            out = np.zeros((len(texts), logits.shape[1]))
        out[rows] = exp / exp.sum(axis=1, keepdims=True)
    if out is None:  # no texts: no pass ran, so the class count is unknown here
        out = np.zeros((0, 0))
    return out, np.array(truncated, dtype=bool)


def token_batches(sorted_lengths: list[int], tokens_per_batch: int, max_rows: int = 64) -> list[slice]:
    """Consecutive slices of length-sorted texts whose padded size (rows x longest) stays within the budget."""
    batches, start = [], 0
    while start < len(sorted_lengths):
        end = start + 1
        while (
            end < len(sorted_lengths)
            and end - start < max_rows
            and ((end - start + 1) * sorted_lengths[end] <= tokens_per_batch)
        ):
            end += 1
        batches.append(slice(start, end))
        start = end
    return batches


def _label_names(model_dir: Path) -> list[str]:
    """Class names in output order, from the model's config.json (no transformers needed)."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    id2label = {int(k): v for k, v in config["id2label"].items()}
    return [id2label[i] for i in range(len(id2label))]
