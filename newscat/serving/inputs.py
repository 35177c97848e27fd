"""What a request may hold: the texts, checked one by one, and the per-request limits.

Every malformed request ends here as an MLflow INVALID_PARAMETER_VALUE error, which the scoring server answers with
a 400 that names the problem and what to send instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

TEXT_COLUMN = "text"
INPUT_HELP = (
    'send JSON such as {"inputs": ["headline one", "headline two"]} or '
    '{"dataframe_split": {"columns": ["text"], "data": [["headline one"]]}}'
)
# Serving limits: the environment of `mlflow models serve`, else the defaults logged with the model.
MAX_BATCH_ENV = "NEWSCAT_MAX_BATCH"
MAX_BATCH = 1024  # texts per request; more is refused with a 400 that says to split the request
SERVING_FLAG = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"  # set by MLflow's scoring server (after the model has loaded)
# Characters kept per text before tokenizing: far beyond what max_length tokens can hold (WordPiece averages
# under 6 characters a token), so nothing that the model would see is lost, but a 10 MB "headline" cannot tie up
# the tokenizer.
CHARS_PER_TOKEN_CAP = 32


def texts_from(model_input: Any) -> list[str]:
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
        raise invalid(f"unsupported input type {type(model_input).__name__}; {INPUT_HELP}")
    for row, value in enumerate(values):
        if not isinstance(value, str):
            raise invalid(
                f"every {TEXT_COLUMN!r} value must be a string; row {row} is {_describe(value)} "
                f'(send "" for an empty text); {INPUT_HELP}'
            )
        _check_unicode(row, value)
    return [str(value) for value in values]  # numpy str_ -> str


def _check_unicode(row: int, text: str) -> None:
    """Refuse a text that is not valid Unicode (a lone surrogate such as "\\ud800", which JSON can carry but no
    UTF-8 tokenizer reads) before it reaches a batch shared with other requests."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise invalid(
            f"row {row} is not valid Unicode text: {exc.reason} at character {exc.start} "
            f"({text[exc.start : exc.end]!a}); send UTF-8 text without lone surrogates"
        ) from None


def _column(columns: list[Any], values: Callable[[], list[Any]]) -> list[Any]:
    """The `text` column's values, refusing missing and unexpected columns by name."""
    if TEXT_COLUMN not in columns:
        got = ", ".join(map(repr, columns)) or "no columns"
        raise invalid(f"input needs a column named {TEXT_COLUMN!r}; got {got}; {INPUT_HELP}")
    extra = [column for column in columns if column != TEXT_COLUMN]
    if extra:
        raise invalid(
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
            raise invalid(f"texts must be a flat list of strings, got a {values.ndim}-D array; {INPUT_HELP}")
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


def invalid(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


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
