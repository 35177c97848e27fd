"""The served model: a custom MLflow PythonModel over safetensors weights and a tokenizer."""

from __future__ import annotations

import hashlib
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

from newscat.features import encode_truncating

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

# Serving limits: the environment of `mlflow models serve`, else the defaults logged with the model.
MAX_BATCH_ENV = "NEWSCAT_MAX_BATCH"
MAX_BATCH = 1024  # texts per request; more is refused with a 400 that says to split the request
SERVING_FLAG = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"  # set by MLflow's scoring server (after the model has loaded)
# Characters kept per text before tokenizing: far beyond what max_length tokens can hold (WordPiece averages
# under 6 characters a token), so nothing that the model would see is lost, but a 10 MB "headline" cannot tie up
# the tokenizer.
CHARS_PER_TOKEN_CAP = 32

# No input schema on purpose: MLflow casts inputs to the schema's types before the model sees them (1, true and
# null would become "1", "True" and "None" and get a 200). The model validates raw input itself (`_texts_from`) and
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
INPUT_HELP = (
    'send JSON such as {"inputs": ["headline one", "headline two"]} or '
    '{"dataframe_split": {"columns": ["text"], "data": [["headline one"]]}}'
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
        self._batcher = _Batcher(self._forward)

    # Annotated as DataFrame (MLflow would build an input schema from a list[str] hint); the server may also hand
    # over a dict of arrays or an array, as parsed from the JSON, which `_texts_from` checks.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        texts = _texts_from(model_input)
        limit = max_batch(self.logged_max_batch)
        if limit is not None and len(texts) > limit:
            raise _invalid(
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


def max_batch(logged: int = MAX_BATCH) -> int | None:
    """Texts allowed per call: `NEWSCAT_MAX_BATCH`, else (behind MLflow's scoring server) the logged setting, 1024.

    In-process callers (batch scoring, Spark UDFs, evaluation) have no limit unless the variable is set. Read per
    call: the scoring server marks itself (`_MLFLOW_IS_IN_SERVING_ENVIRONMENT`) only after the model has loaded.
    """
    raw = os.environ.get(MAX_BATCH_ENV, "").strip()
    if not raw and os.environ.get(SERVING_FLAG, "").lower() != "true":
        return None
    raw = raw or str(logged)
    if not raw.isdigit() or int(raw) < 1:
        raise MlflowException(f"{MAX_BATCH_ENV}={raw!r}: give a whole number >= 1", error_code=INVALID_PARAMETER_VALUE)
    return int(raw)


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

    def __init__(self, run: Callable[[list[str]], Any], max_texts: int = 256) -> None:
        self._run = run
        self._max_texts = max_texts
        self._queue: queue.SimpleQueue[tuple[list[str], Future]] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="newscat-batcher", daemon=True).start()

    def submit(self, texts: list[str]) -> Any:
        """`run(texts)`'s result for these texts: an array, or a tuple of arrays, with one row per text."""
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
            results = self._run([text for texts, _ in pending for text in texts])
        except BaseException as exc:  # hand the error to every waiting request; keep the thread alive
            for _, done in pending:
                done.set_exception(exc)
            return
        start = 0
        for texts, done in pending:
            rows = slice(start, start + len(texts))
            done.set_result(tuple(r[rows] for r in results) if isinstance(results, tuple) else results[rows])
            start += len(texts)


def _texts_from(model_input: Any) -> list[str]:
    """The texts of a request, checked: a frame or mapping with one `text` column, or a list of strings.

    The scoring server hands over whatever the JSON held (the signature has no input schema), so every kind of
    malformed request ends here as a 400 that names the problem and what to send instead.
    """
    if isinstance(model_input, pd.DataFrame):
        values = _column(list(model_input.columns), lambda: model_input[TEXT_COLUMN].tolist())
    elif isinstance(model_input, dict):
        values = _column(list(model_input), lambda: _as_list(model_input[TEXT_COLUMN]))
    elif isinstance(model_input, (pd.Series, list, tuple, np.ndarray, str)):
        values = _as_list(model_input)
    else:
        raise _invalid(f"unsupported input type {type(model_input).__name__}; {INPUT_HELP}")
    for row, value in enumerate(values):
        if not isinstance(value, str):
            raise _invalid(
                f"every {TEXT_COLUMN!r} value must be a string; row {row} is {_describe(value)} "
                f'(send "" for an empty text); {INPUT_HELP}'
            )
    return [str(value) for value in values]  # numpy str_ -> str


def _column(columns: list[Any], values: Callable[[], list[Any]]) -> list[Any]:
    """The `text` column's values, refusing missing and unexpected columns by name."""
    if TEXT_COLUMN not in columns:
        got = ", ".join(map(repr, columns)) or "no columns"
        raise _invalid(f"input needs a column named {TEXT_COLUMN!r}; got {got}; {INPUT_HELP}")
    extra = [column for column in columns if column != TEXT_COLUMN]
    if extra:
        raise _invalid(
            f"unexpected column(s) {', '.join(map(repr, extra))}: the model reads only {TEXT_COLUMN!r}; "
            "drop the others (keep ids on the client side, the answers come back in request order)"
        )
    return values()


def _as_list(values: Any) -> list[Any]:
    """A 1-D list of the values; a lone string is one text, nested lists are refused."""
    if isinstance(values, str):
        return [values]
    if isinstance(values, np.ndarray):
        if values.ndim == 0:
            return [values.item()]
        if values.ndim > 1:
            raise _invalid(f"texts must be a flat list of strings, got a {values.ndim}-D array; {INPUT_HELP}")
    return list(values)


def _describe(value: Any) -> str:
    """How a non-string value reads in an error message."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "null"
    if isinstance(value, (list, tuple, np.ndarray, dict)):
        return f"a nested {type(value).__name__} ({str(value)[:60]})"
    if isinstance(value, (bool, np.bool_)):
        return f"the boolean {value}"
    return f"the {type(value).__name__} {str(value)[:60]}"


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
    settings = {
        "max_length": max_length,
        "base_model": base_model,
        "batch_size": 64,
        "max_batch": MAX_BATCH,
        "weights_sha256": file_sha256(target / "model.safetensors"),  # checked at every load
    }
    (target / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
    return target


def logged_weights_sha256(model_dir: Path) -> str:
    """The SHA-256 of `model.safetensors` that `export_classifier` recorded in the model's settings."""
    return json.loads((model_dir / SETTINGS_FILE).read_text(encoding="utf-8"))["weights_sha256"]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class CorruptModelError(MlflowException):
    """The weights on disk are not the weights that were logged."""


def verify_weights(model_dir: Path, expected: str | None) -> None:
    """Refuse weights whose SHA-256 differs from the one recorded when the model was logged (a copy cut short)."""
    if expected is None:  # logged before digests were recorded
        return
    actual = file_sha256(model_dir / "model.safetensors")
    if actual != expected:
        raise CorruptModelError(
            f"{model_dir / 'model.safetensors'}: SHA-256 {actual[:12]}... differs from the logged {expected[:12]}...; "
            "the artifact copy is incomplete or altered: download it again or re-log the model"
        )


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
