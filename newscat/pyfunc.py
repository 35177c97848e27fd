"""The served model: a custom MLflow PythonModel over safetensors weights and a tokenizer."""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import ColSpec, DataType, Map, Schema

from newscat.features import encode_texts

TEXT_COLUMN = "text"
PRECISION_ENV = "NEWSCAT_PRECISION"
BF16_MIN_TOKENS = 256  # padded tokens in a batch below which bf16 runs as fp32 (measured: slower on one headline)
SETTINGS_FILE = "newscat.json"
# Files of a Trainer checkpoint that make up the served model; pickles (training_args.bin) are left out.
MODEL_FILES = (
    "model.safetensors",
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)

SIGNATURE = mlflow.models.ModelSignature(
    inputs=Schema([ColSpec(DataType.string, TEXT_COLUMN)]),
    outputs=Schema(
        [
            ColSpec(DataType.string, "label"),
            ColSpec(DataType.double, "score"),
            ColSpec(Map(DataType.double), "probabilities"),
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
        self.max_length = int(settings["max_length"])
        self.batch_size = int(settings.get("batch_size", 64))
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
        self._batcher = _Batcher(self._forward)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        texts = _texts_from(model_input)
        probabilities = self.predict_proba(texts)
        best = probabilities.argmax(axis=1) if len(texts) else np.empty(0, dtype=int)
        return pd.DataFrame(
            {
                "label": [self.label_names[i] for i in best],
                "score": probabilities[np.arange(len(texts)), best].astype(float),
                "probabilities": [dict(zip(self.label_names, map(float, row), strict=True)) for row in probabilities],
            }
        )

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities, shape (len(texts), n_classes).

        Concurrent callers (the scoring server runs each request in a thread) share forward passes.
        """
        return self._batcher.submit(texts)

    def _forward(self, texts: list[str]) -> np.ndarray:
        """One thread runs the model: length-sorted batches, no padding beyond each batch's longest text."""
        torch = self._torch
        out = np.zeros((len(texts), len(self.label_names)), dtype=np.float64)
        if not texts:
            return out
        encoded = encode_texts(self.tokenizer, texts, self.max_length)["input_ids"]
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
        return out


def serving_precision() -> str:
    """`NEWSCAT_PRECISION`: auto (default: bf16 where the hardware runs it natively, else fp32), fp32, bf16
    (autocast) or int8 (dynamic quantization; measured 0.5 points less accurate on AG News, so never automatic)."""
    value = os.environ.get(PRECISION_ENV, "auto").strip().lower() or "auto"
    if value not in ("auto", "fp32", "bf16", "int8"):
        raise MlflowException(
            f"{PRECISION_ENV}={value!r}: use auto, fp32, bf16 or int8", error_code=INVALID_PARAMETER_VALUE
        )
    if value == "auto":
        from newscat.modeling import native_bf16

        return "bf16" if native_bf16() else "fp32"
    return value


class _Batcher:
    """Runs every forward pass on one thread and merges the requests that queue up meanwhile.

    With no load a request goes straight through (no waiting window); under load, requests that arrive
    while the model is busy are scored together in the next pass, so throughput grows with concurrency
    instead of threads fighting over the same cores.
    """

    def __init__(self, run: Callable[[list[str]], np.ndarray], max_texts: int = 256) -> None:
        self._run = run
        self._max_texts = max_texts
        self._queue: queue.SimpleQueue[tuple[list[str], Future]] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="newscat-batcher", daemon=True).start()

    def submit(self, texts: list[str]) -> np.ndarray:
        done: Future = Future()
        self._queue.put((texts, done))
        return done.result()

    def _loop(self) -> None:
        while True:
            pending = [self._queue.get()]
            count = len(pending[0][0])
            while count < self._max_texts:
                try:
                    pending.append(self._queue.get_nowait())
                except queue.Empty:
                    break
                count += len(pending[-1][0])
            self._serve(pending)

    def _serve(self, pending: list[tuple[list[str], Future]]) -> None:
        try:
            probabilities = self._run([text for texts, _ in pending for text in texts])
        except BaseException as exc:  # hand the error to every waiting request; keep the thread alive
            for _, done in pending:
                done.set_exception(exc)
            return
        start = 0
        for texts, done in pending:
            done.set_result(probabilities[start : start + len(texts)])
            start += len(texts)


def _texts_from(model_input: Any) -> list[str]:
    """Accept a DataFrame with a `text` column, a Series, or a list of strings."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN not in model_input.columns:
            raise _invalid(
                f"input needs a column named {TEXT_COLUMN!r}; got {', '.join(map(str, model_input.columns))}"
            )
        values = model_input[TEXT_COLUMN].tolist()
    elif isinstance(model_input, pd.Series):
        values = model_input.tolist()
    elif isinstance(model_input, (list, tuple, np.ndarray)):
        values = list(model_input)
    elif isinstance(model_input, str):
        values = [model_input]
    else:
        raise _invalid(f"unsupported input type {type(model_input).__name__}; send a list of strings")
    bad = [i for i, value in enumerate(values) if not isinstance(value, str)]
    if bad:
        value = values[bad[0]]
        shown = "null" if value is None or (isinstance(value, float) and np.isnan(value)) else repr(value)
        raise _invalid(
            f'every {TEXT_COLUMN!r} value must be a string; row {bad[0]} is {shown} (send "" for an empty text)'
        )
    return values


def _invalid(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def export_classifier(checkpoint: Path, target: Path, *, max_length: int, base_model: str) -> Path:
    """Copy a checkpoint's weights and tokenizer into a clean model directory (no pickles)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, target / name)
    if not (target / "model.safetensors").is_file():
        raise FileNotFoundError(f"{checkpoint}: no model.safetensors to serve")
    settings = {"max_length": max_length, "base_model": base_model, "batch_size": 64}
    (target / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
    return target


def load(model_uri: str) -> Any:
    """Load a logged or registered model as a pyfunc (any URI MLflow understands)."""
    return mlflow.pyfunc.load_model(model_uri)


def pip_requirements() -> list[str]:
    """Pinned requirements of the serving environment (torch pinned to the CPU build installed here)."""
    from importlib.metadata import version

    # "2.13.0+cpu" -> "2.13.0": local version labels are not on PyPI.
    return [
        f"{name}=={version(name).split('+')[0]}"
        for name in ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "pandas", "numpy")
    ]


def log_pyfunc(model_dir: Path, *, name: str = "model") -> Any:
    """Log the classifier as a pyfunc model in the active run; returns MLflow's ModelInfo."""
    import newscat

    example = pd.DataFrame({TEXT_COLUMN: ["Stocks rally as oil prices fall", "Striker scores twice in cup final win"]})
    package = Path(newscat.__file__).parent
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(package / "served_model.py"),  # models-from-code: nothing pickled
        artifacts={"classifier": str(model_dir)},
        code_paths=[str(package)],
        signature=SIGNATURE,
        input_example=example,
        pip_requirements=pip_requirements(),
    )
