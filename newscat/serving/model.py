"""The served model: a custom MLflow PythonModel over safetensors weights and a tokenizer.

This package (with `newscat.data.text`) is the only code shipped inside a logged model: it imports no training,
tuning or tracking code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.types.schema import ColSpec, DataType, Map, Schema

from newscat.serving.artifacts import SETTINGS_FILE, verify_files
from newscat.serving.backends import Engine, load_engine
from newscat.serving.batching import Batcher
from newscat.serving.choice import Choice, Platform, resolve
from newscat.serving.inputs import CHARS_PER_TOKEN_CAP, MAX_BATCH, MAX_BATCH_ENV, invalid, max_batch, texts_from
from newscat.serving.lexical import LexicalModel, mix, prepare_texts
from newscat.serving.tokens import TokenEncoder

# Padded tokens per forward pass. Measured on a 2-core AMD EPYC (ONNX int8, batches of 128 news items merged from
# concurrent requests): 352 texts/s at 512 tokens, 312 at 2,048, 193 with fixed batches of 64 texts; titles alone
# run 64 to a batch.
TOKENS_PER_BATCH = 512

# No input schema on purpose: MLflow casts inputs to the schema's types before the model sees them (1, true and
# null would become "1", "True" and "None" and get a 200). The model validates raw input itself (`texts_from`) and
# answers every malformed request with a 400 that says what to send.
SIGNATURE = mlflow.models.ModelSignature(
    inputs=None,
    outputs=Schema(
        [
            ColSpec(DataType.string, "label"),
            ColSpec(DataType.double, "score"),
            ColSpec(Map(DataType.double), "probabilities"),
            ColSpec(DataType.boolean, "truncated"),
        ]
    ),
)


class NewsClassifier(mlflow.pyfunc.PythonModel):
    """Loads once; predicts a topic, its probability and every class probability per text."""

    def load_context(self, context: Any) -> None:
        model_dir = Path(context.artifacts["classifier"])
        settings = json.loads((model_dir / SETTINGS_FILE).read_text(encoding="utf-8"))
        verify_files(model_dir, settings)
        self.max_length = int(settings["max_length"])
        self.tokens_per_batch = int(settings.get("tokens_per_batch", TOKENS_PER_BATCH))
        self.logged_max_batch = int(settings.get("max_batch", MAX_BATCH))
        max_batch(self.logged_max_batch)  # a bad NEWSCAT_MAX_BATCH fails at startup, not on the first request
        self.label_names = _label_names(model_dir)
        self.encoder = TokenEncoder(model_dir, self.max_length)
        self.choice: Choice = resolve(settings.get("serving", {}), Platform.detect())
        self.engine = load_engine(model_dir, self.choice.backend, self.choice.precision, self.choice.device)
        lexical = settings.get("lexical")  # the TF-IDF companion, when it won on validation
        self.lexical = LexicalModel.load(model_dir, float(lexical["weight"])) if lexical else None
        self._batcher = Batcher(self._forward)
        # One line on the server's console says which engine answers (the scoring server configures no logging).
        print(f"newscat model serves with {self.choice}", file=sys.stderr, flush=True)

    # Annotated as DataFrame (MLflow would build an input schema from a list[str] hint); the server may also hand
    # over a dict of arrays or an array, as parsed from the JSON, which `_texts_from` checks.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        texts = texts_from(model_input)
        limit = max_batch(self.logged_max_batch)
        if limit is not None and len(texts) > limit:
            raise invalid(
                f"{len(texts)} texts in one request; the limit is {limit} ({MAX_BATCH_ENV} on the server): "
                "split them into smaller requests"
            )
        probabilities, truncated = self._batcher.submit(texts)
        best = probabilities.argmax(axis=1) if len(texts) else np.empty(0, dtype=int)
        return pd.DataFrame(
            {
                "label": [self.label_names[i] for i in best],
                "score": probabilities[np.arange(len(texts)), best].astype(float),
                "probabilities": [dict(zip(self.label_names, map(float, row), strict=True)) for row in probabilities],
                "truncated": truncated.astype(bool),
            }
        )

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities, shape (len(texts), n_classes).

        Concurrent callers (the scoring server runs each request in a thread) share forward passes.
        """
        return self._batcher.submit(texts)[0]

    def _forward(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Runs on the batcher's thread: probabilities and truncation flags of the merged requests' texts."""
        if not texts:
            return np.zeros((0, len(self.label_names))), np.zeros(0, dtype=bool)
        probabilities, truncated = class_probabilities(self.encoder, self.engine, texts, self.tokens_per_batch)
        if self.lexical is not None:
            prepared = prepare_texts(texts, self.max_length * CHARS_PER_TOKEN_CAP)
            probabilities = mix(probabilities, self.lexical.probabilities(prepared), self.lexical.weight)
        return probabilities, truncated


def class_probabilities(
    encoder: TokenEncoder, engine: Engine, texts: list[str], tokens_per_batch: int = TOKENS_PER_BATCH
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of `texts` and, per text, whether tokens beyond `max_length` were cut off.

    Texts are sorted by length and cut into batches of at most `tokens_per_batch` padded tokens (and 64 texts), so
    that no batch pads short texts to a long one's length and each fits the CPU's caches.
    """
    encoded, truncated = encoder.encode(texts, max_chars=encoder.max_length * CHARS_PER_TOKEN_CAP)
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    out: np.ndarray | None = None
    for rows in token_batches([len(encoded[i]) for i in order], tokens_per_batch):
        rows = order[rows]
        logits = engine(*encoder.pad([encoded[i] for i in rows])).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)  # a stable softmax
        exp = np.exp(logits)
        if out is None:
            out = np.zeros((len(texts), logits.shape[1]))
        out[rows] = exp / exp.sum(axis=1, keepdims=True)
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
