"""Data lineage: the study's splits as MLflow datasets (with digests), and the record of what an evaluation used."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow

from newscat.config import Config
from newscat.names import ROLE_TAG, STUDY_TAG, Role
from newscat.redaction import redact_url
from newscat.tracking.limits import PARAM_VALUE_LIMIT
from newscat.tracking.runs import log_params_once

if TYPE_CHECKING:
    import pandas as pd

    from newscat.data.load import NewsData


def log_study_setup(cfg: Config, data: NewsData) -> None:
    """Config as flat params (passwords masked), and the splits as the run's dataset inputs (with digests)."""
    log_params_once(cfg.to_flat_dict())
    mlflow.set_tags({STUDY_TAG: cfg.tune.study_name, ROLE_TAG: Role.STUDY})
    digests = {}
    with warnings.catch_warnings():  # MLflow's hints about source kinds and int columns are noise here
        warnings.simplefilter("ignore", UserWarning)
        for split in ("train", "validation", "test"):
            frame = getattr(data, split)
            dataset = mlflow.data.from_pandas(frame, source=_source(data.source), targets="label", name=split)
            mlflow.log_input(dataset, context=split)
            digests[split] = dataset.digest
    log_params_once(
        {
            "data.layout": data.layout,
            "data.labels": ",".join(data.label_names)[:PARAM_VALUE_LIMIT],
            "data.train_rows": len(data.train),
            "data.validation_rows": len(data.validation),
            "data.test_rows": len(data.test),
            "data.train_digest": digests["train"],
            "data.test_digest": digests["test"],
            "data.test_sha256": rows_sha256(data.test),
        }
    )


def same_source(first: str, second: str) -> bool:
    """Whether two spellings of a data source name the same data (a local path resolved, a URL as given)."""
    return _source(first) == _source(second)


def _source(source: str) -> str:
    """The source as the lineage records it: a local path resolved, a URL without its password."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else redact_url(source)


def dataset_record(frame: pd.DataFrame, source: str, split: str) -> dict[str, Any]:
    """What an evaluation was computed on: source, split, MLflow dataset digest, digest of every row, row count."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, source=_source(source), targets="label", name=split)
    return {
        "source": redact_url(source),
        "split": split,
        "digest": dataset.digest,
        "sha256": rows_sha256(frame),
        "rows": len(frame),
    }


def rows_sha256(frame: pd.DataFrame) -> str:
    """SHA-256 of every row's text and label, in order.

    MLflow's dataset digest hashes only the first 10,000 rows (and the row count) into 8 hex digits: a test split
    edited past its 10,000th row would keep its digest. This one covers every row.
    """
    digest = hashlib.sha256()
    for text, label in zip(frame["text"], frame["label"], strict=True):
        digest.update(json.dumps([str(text), int(label)], ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()
