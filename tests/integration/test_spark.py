"""`newscat predict --spark` on a local Spark session gives the single-process predictions, row for row."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import CLASSES, MODEL_NAME, ROOT, tool_env, write_ag_news_dir
from tests.integration.conftest import TrackedStudy

pytestmark = pytest.mark.integration


SPARK_ROWS = 2000  # of the official test split: enough for several partitions of differently batched texts


def _ag_news_test_split(tmp_path: Path) -> Path:
    """The first `SPARK_ROWS` rows of the official AG News test split beside the repository when present, else
    generated rows in its layout."""
    for candidate in (os.environ.get("NEWSCAT_AG_NEWS_TEST", ""), ROOT.parent / "shared/data/ag_news/test.csv"):
        if candidate and Path(candidate).is_file():
            lines = Path(candidate).read_bytes().splitlines(keepends=True)[:SPARK_ROWS]  # one news item per line
            (tmp_path / "test.csv").write_bytes(b"".join(lines))
            return tmp_path / "test.csv"
    return write_ag_news_dir(tmp_path / "generated", n_train=1, n_test=500) / "test.csv"


@pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java")
def test_spark_scoring_matches_single_process_scoring(tracked_study: TrackedStudy, tmp_path: Path) -> None:
    source = _ag_news_test_split(tmp_path)
    env = tool_env(tracked_study.tracking_uri)  # no override: the model's recorded default path, int8 included
    model = f"models:/{MODEL_NAME}@champion"
    common = ["--layout", "ag_news", "-i", str(source)]

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["newscat", "predict", model, *common, *args], env=env, capture_output=True, text=True, timeout=900
        )
        assert result.returncode == 0, result.stderr[-4000:]
        return result

    run("-o", str(tmp_path / "single.jsonl"))
    spark = run("--spark", "--master", "local[2]", "--partitions", "2", "-o", str(tmp_path / "spark"))

    single = [json.loads(line) for line in (tmp_path / "single.jsonl").read_text().splitlines()]
    parts = sorted((tmp_path / "spark").glob("part-*.json"))
    rows = (json.loads(line) for part in parts for line in part.read_text().splitlines())
    scored = sorted(rows, key=lambda r: r["row"])
    with source.open(encoding="utf-8", newline="") as handle:
        n_rows = sum(1 for _ in csv.reader(handle))
    assert len(single) == len(scored) == n_rows and f"scored {n_rows} text(s) on Spark" in spark.stderr
    assert [r["text"] for r in scored] == [r["text"] for r in single]  # same rows, same order
    assert [r["label"] for r in scored] == [r["label"] for r in single]
    assert set(scored[0]["probabilities"]) == set(CLASSES)
    # One text, one answer: Spark's partitions batch the texts differently from the single process.
    gaps = [
        abs(a["probabilities"][c] - b["probabilities"][c]) for a, b in zip(scored, single, strict=True) for c in CLASSES
    ]
    assert max(gaps) <= 1e-5
    assert [r["truncated"] for r in scored] == [r["truncated"] for r in single]


@pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java")
def test_training_predict_and_spark_read_the_same_text_from_ag_news_rows(tmp_path: Path) -> None:
    """One join (`newscat.data.text.join_fields`) behind all three paths: the same rows give identical texts."""
    from newscat.batch.files import read_texts
    from newscat.batch.spark import read_frame, spark_session
    from newscat.config import DataConfig
    from newscat.data.load import load_news

    data = write_ag_news_dir(tmp_path / "ag_news", n_train=3, n_test=1)
    tricky = [
        ("1", "  Title with spaces  ", "  and a description  "),
        ("2", "Empty description", ""),
        ("3", "", "Empty title"),
        ("4", 'Quotes "inside", commas', "Line one\nline two \\ and #36;5"),
        ("1", "Accents café", "emoji \U0001f680 and tab\tend"),
    ]
    with (data / "test.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, quoting=csv.QUOTE_ALL).writerows(tricky)
    source = data / "test.csv"

    training = load_news(DataConfig(source=str(data)), seed=0).test["text"].tolist()
    predicting = read_texts(str(source), "text", layout="ag_news")
    spark = spark_session("local[1]")
    try:
        rows = read_frame(spark, str(source), layout="ag_news").orderBy("row").collect()
    finally:
        spark.stop()
    on_spark = [row["text"] for row in rows]
    assert training == predicting == on_spark
    assert training[:3] == ["Title with spaces     and a description", "Empty description", "Empty title"]
