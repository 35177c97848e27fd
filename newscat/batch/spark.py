"""Batch scoring on Spark with `mlflow.pyfunc.spark_udf`: the same registered model, many cores or machines."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import pandas as pd

from newscat.data.text import join_fields
from newscat.errors import NewscatError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

# What the model returns per text, as Spark types (the pyfunc's output signature).
RESULT_TYPE = "label STRING, score DOUBLE, probabilities MAP<STRING, DOUBLE>, truncated BOOLEAN"
LAYOUTS = ("table", "ag_news")


class SparkInputError(NewscatError):
    """The input cannot be scored as asked."""


def spark_session(master: str = "local[*]") -> SparkSession:
    """A Spark session whose Python workers run this interpreter (and so this environment's newscat and torch)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SparkInputError("Spark scoring needs pyspark: pip install 'newscat[spark]' (and Java 17+)") from exc
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    return (
        SparkSession.builder.master(master)
        .appName("newscat-predict")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )


def read_frame(spark: SparkSession, source: str, *, text_column: str = "text", layout: str = "table") -> DataFrame:
    """Rows `row` (input order) and `text` from a CSV with a header, Parquet or JSON lines file or folder, or a
    headerless AG News CSV (`layout="ag_news"`: label, title, description; text = `join_fields(title, description)`,
    the join training uses)."""
    from pyspark.sql import functions as F

    if layout == "ag_news":
        frame = spark.read.csv(source, header=False, multiLine=True, escape='"')
        if len(frame.columns) != 3:
            raise SparkInputError(f"{source}: {len(frame.columns)} columns; the AG News layout has 3")
        frame = frame.select(_joined(F.coalesce("_c1", F.lit("")), F.coalesce("_c2", F.lit(""))).alias("text"))
    else:
        frame = _read_table(spark, source)
        if text_column not in frame.columns:
            raise SparkInputError(f"{source}: no column {text_column!r}; columns: {', '.join(frame.columns)}")
        frame = frame.select(F.coalesce(F.col(text_column).cast("string"), F.lit("")).alias("text"))
    return frame.withColumn("row", F.monotonically_increasing_id())  # increasing in input order


def _read_table(spark: SparkSession, source: str) -> DataFrame:
    lowered = source.lower().rstrip("/")
    if lowered.endswith(".parquet"):
        return spark.read.parquet(source)
    if lowered.endswith((".json", ".jsonl")):
        return spark.read.json(source)
    return spark.read.csv(source, header=True, multiLine=True, escape='"')


def _join_series(titles: pd.Series, descriptions: pd.Series) -> pd.Series:
    return pd.Series([join_fields(t, d) for t, d in zip(titles, descriptions, strict=True)])


def _joined(title: Column, description: Column) -> Column:
    """The one text join (`newscat.data.text.join_fields`) as a vectorized Spark UDF."""
    from pyspark.sql import functions as F

    return F.pandas_udf(_join_series, "string")(title, description)


def score_frame(spark: SparkSession, texts: DataFrame, model_uri: str) -> DataFrame:
    """`texts` with the model's answer per row: label, score, probabilities, truncated."""
    import mlflow
    from pyspark.sql import functions as F

    classify = mlflow.pyfunc.spark_udf(spark, model_uri, result_type=RESULT_TYPE, env_manager="local")
    # struct("text") hands the model a DataFrame with a `text` column, as the scoring server does.
    return texts.withColumn("answer", classify(F.struct("text"))).select("row", "text", "answer.*")


def predict_with_spark(
    model_uri: str,
    source: str,
    output: str,
    *,
    text_column: str = "text",
    layout: str = "table",
    master: str = "local[*]",
    partitions: int | None = None,
) -> int:
    """Score `source` with `model_uri` on Spark; write JSON lines (one folder of part files) to `output`.

    Returns the number of rows scored.
    """
    if layout not in LAYOUTS:
        raise SparkInputError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    spark = spark_session(master)
    texts = read_frame(spark, source, text_column=text_column, layout=layout)
    if partitions:
        texts = texts.repartition(partitions)
    scored = score_frame(spark, texts, model_uri).cache()
    scored.orderBy("row").write.mode("overwrite").json(output)
    return scored.count()
