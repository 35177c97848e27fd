"""The served model: a custom MLflow PythonModel over safetensors weights and a tokenizer.

This package (with `newscat.data.text`) is the only code shipped inside a logged model: it imports no training,
tuning or tracking code.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.types.schema import ColSpec, DataType, Map, Schema

from newscat.data.text import encode_truncating
from newscat.serving.artifacts import SETTINGS_FILE, verify_weights
from newscat.serving.batching import Batcher
from newscat.serving.inputs import CHARS_PER_TOKEN_CAP, MAX_BATCH, MAX_BATCH_ENV, invalid, max_batch, texts_from
from newscat.serving.precision import BF16_MIN_TOKENS, serving_precision

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
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model_dir = Path(context.artifacts["classifier"])
        settings = json.loads((model_dir / SETTINGS_FILE).read_text(encoding="utf-8"))
        verify_weights(model_dir, settings.get("weights_sha256"))
        self.max_length = int(settings["max_length"])
        self.batch_size = int(settings.get("batch_size", 64))
        self.logged_max_batch = int(settings.get("max_batch", MAX_BATCH))
        max_batch(self.logged_max_batch)  # a bad NEWSCAT_MAX_BATCH fails at startup, not on the first request
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, use_safetensors=True, trust_remote_code=False
        ).eval()
        config = self.model.config
        self.label_names = [config.id2label[i] for i in range(config.num_labels)]
        self.precision = serving_precision()
        if self.precision == "int8":  # dynamic int8 quantization of every Linear layer
            with warnings.catch_warnings():  # torch marks the quantized-tensor API deprecated; it still works
                warnings.simplefilter("ignore")
                self.model = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)
        self._torch = torch
        self._batcher = Batcher(self._forward)

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
        """One thread runs the model: length-sorted batches, no padding beyond each batch's longest text.

        Returns the class probabilities and, per text, whether tokens beyond `max_length` were cut off.
        """
        torch = self._torch
        out = np.zeros((len(texts), len(self.label_names)), dtype=np.float64)
        if not texts:
            return out, np.zeros(0, dtype=bool)
        encoded, truncated = encode_truncating(
            self.tokenizer, texts, self.max_length, max_chars=self.max_length * CHARS_PER_TOKEN_CAP
        )
        order = np.argsort([len(ids) for ids in encoded], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt")
                # bf16 pays off on big batches; on a lone headline its casts cost more than they save.
                big = batch["input_ids"].numel() >= BF16_MIN_TOKENS
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16" and big):
                    logits = self.model(**batch).logits
                out[rows] = torch.softmax(logits.float(), dim=-1).numpy()
        return out, np.array(truncated, dtype=bool)
