"""The monitoring reference packaged beside a served model: per text, the features of what the model read and what
it answered (what monitoring compares).

The same table is built twice. At release, from texts of the training distribution that the final encoder did not
train on (the validation rows, and the gate's training texts where it did not see them), answered by the built model
on its served path: the **training reference**, logged beside the model. Later, from the served model's traces: the
**live window**. Texts are never kept in the reference, only the features below; the reference also records,
per text whose label is known at release, whether the model's answer was right (`correct`: what the label-free
accuracy estimate is calibrated on, `newscat.monitoring.estimate`). The artifact is written by
`newscat.tracking.models.log_reference` at `REFERENCE_ARTIFACT` and read by the monitor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

CORRECT = "correct"  # the reference's column: 1.0 the model's answer was right, 0.0 wrong, NaN no label known
NUMERIC = ("chars", "tokens", "unknown_share", "confidence")
CATEGORICAL = ("label", "truncated")
FEATURES = NUMERIC + CATEGORICAL
REFERENCE_DIR = "monitoring"  # the folder beside the served model's files
REFERENCE_FILE = "reference.parquet"
REFERENCE_ARTIFACT = f"{REFERENCE_DIR}/{REFERENCE_FILE}"


def feature_frame(
    chars: Sequence[int],
    tokens: Sequence[int],
    unknown: Sequence[int],
    truncated: Sequence[bool],
    labels: Sequence[str],
    confidence: Sequence[float],
) -> pd.DataFrame:
    """The feature table (one row per text); `unknown` counts unknown tokens, turned into a share of `tokens`."""
    tokens_array = np.asarray(tokens, dtype=np.int64)
    share = np.asarray(unknown, dtype=np.float64) / np.maximum(tokens_array, 1)
    return pd.DataFrame(
        {
            "chars": np.asarray(chars, dtype=np.int64),
            "tokens": tokens_array,
            "unknown_share": share,
            "confidence": np.asarray(confidence, dtype=np.float64),
            "label": pd.Series(list(labels), dtype="object"),
            "truncated": pd.Series([bool(t) for t in truncated], dtype="object").map({True: "yes", False: "no"}),
        },
        columns=list(FEATURES),
    )


def correctness(probabilities: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Per row, 1.0 where the top class is the label, 0.0 where not, NaN where the label is unknown (negative)."""
    truth = np.asarray(labels, dtype=np.int64)
    right = (probabilities.argmax(axis=1) == truth).astype(np.float64)
    return np.where(truth >= 0, right, np.nan)


def features_of_answers(
    texts: Sequence[str],
    probabilities: np.ndarray,
    truncated: Sequence[bool],
    counts: tuple[Sequence[int], Sequence[int]],
    label_names: Sequence[str],
    labels: Sequence[int] | None = None,
) -> pd.DataFrame:
    """The feature table of texts as a model answered them (`counts`: tokens read and unknown ones, per text); with
    their true `labels` (class indices, negative where unknown), the `correct` column too."""
    best = probabilities.argmax(axis=1)
    frame = feature_frame(
        [len(t) for t in texts],
        counts[0],
        counts[1],
        truncated,
        [label_names[i] for i in best],
        probabilities[np.arange(len(best)), best],
    )
    if labels is not None:
        frame[CORRECT] = correctness(probabilities, labels)
    return frame


def features_of_records(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The feature table of traced answers (the per-text records `newscat.serving.tracing.text_records` writes)."""
    rows = list(records)
    return feature_frame(
        [r["chars"] for r in rows],
        [r["tokens"] for r in rows],
        [r.get("unknown", 0) for r in rows],  # traces written before newscat recorded unknown tokens: none
        [r["truncated"] for r in rows],
        [r["label"] for r in rows],
        [r["score"] for r in rows],
    )
