"""Batch prediction with any MLflow model URI over CSV, JSONL or plain-text lines."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import IO

import pandas as pd

from newscat.data.text import join_fields
from newscat.errors import NewscatError


class InputError(NewscatError):
    """The input to score is unusable."""


def read_texts(source: str, text_column: str, layout: str = "table") -> list[str]:
    """Texts from a CSV (with `text_column`), a JSONL file, or plain lines ('-' is stdin); with `layout="ag_news"`
    a headerless AG News CSV (label, title, description), whose text is `join_fields(title, description)`, as in
    training."""
    if layout == "ag_news":
        return _ag_news_texts(source)
    if source == "-":
        raw, suffix = sys.stdin.read(), ""
    else:
        path = Path(source)
        try:
            raw, suffix = path.read_text(encoding="utf-8"), path.suffix
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{source}: cannot read it as UTF-8 text ({exc})") from exc
    if suffix == ".csv":
        frame = pd.read_csv(io.StringIO(raw), dtype=str, keep_default_na=False)
    elif suffix in (".jsonl", ".json") or raw.lstrip().startswith("{"):
        frame = pd.read_json(io.StringIO(raw), lines=True, dtype=False)
    else:
        return [line for line in raw.splitlines() if line.strip()]
    if text_column not in frame.columns:
        raise InputError(f"{source}: no column {text_column!r}; columns: {', '.join(map(str, frame.columns))}")
    return frame[text_column].fillna("").astype(str).tolist()


def _ag_news_texts(source: str) -> list[str]:
    import csv

    try:
        with open(source, encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{source}: cannot read it as an AG News CSV ({exc})") from exc
    bad = next((i for i, row in enumerate(rows, start=1) if len(row) != 3), None)
    if bad is not None:
        raise InputError(f"{source}: line {bad} has {len(rows[bad - 1])} fields; AG News has label, title, description")
    return [join_fields(title, description) for _, title, description in rows]


def predict_texts(model_uri: str, texts: list[str], *, batch_size: int, out: IO[str]) -> int:
    """Score `texts` in batches with a progress bar; write one JSON line per text. Returns the count."""
    from tqdm.auto import tqdm

    from newscat.tracking.models import load_model

    model = load_model(model_uri)
    with tqdm(total=len(texts), unit="text", desc="predict", file=sys.stderr) as bar:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            result = model.predict(pd.DataFrame({"text": chunk}))
            for text, row in zip(chunk, result.to_dict(orient="records"), strict=True):
                out.write(json.dumps({"text": text, **row}, ensure_ascii=False) + "\n")
            bar.update(len(chunk))
    return len(texts)
