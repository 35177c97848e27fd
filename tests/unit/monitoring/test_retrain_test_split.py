"""A retrain never trains on a row of its served version's test split: it reads the version's own data as it was cut
(one file, test_fraction 0.3), stops when that split changed, and leaves out every training row, live or original,
whose text is a test row's."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from newscat.config import DataConfig
from newscat.data.load import load_news, text_key
from newscat.monitoring.retrain import LiveRows, without_test_rows, write_retrain_data
from newscat.registry.evaluations import TestSplitChanged
from newscat.registry.tags import VersionTags
from newscat.tracking.datasets import dataset_record
from tests.helpers import pinned_tags, write_news_file


def _live(train: list[tuple[str, str]], holdout: list[tuple[str, str]]) -> LiveRows:
    frame = lambda rows: pd.DataFrame(  # noqa: E731
        {"text": [t for t, _ in rows], "label": [c for _, c in rows], "timestamp_ms": range(len(rows))}
    )
    return LiveRows(frame(train), frame(holdout), window=None)  # type: ignore[arg-type]


def _test_rows(tags: VersionTags) -> pd.DataFrame:
    return load_news(tags.data_config(), seed=0).test


def test_live_texts_of_test_rows_are_not_trained_on_however_written(tmp_path: Path) -> None:
    tags = pinned_tags(write_news_file(tmp_path / "news.csv"))
    test = _test_rows(tags)
    first, second = test["text"].iloc[0], test["text"].iloc[1]
    variant = "  " + second.upper().replace(" ", "   ") + "\\n"  # other case, spacing and an AG News escape
    live = _live([(first, "World"), (variant, "Sports"), ("A headline nobody tested", "Business")], [("new", "World")])
    kept = without_test_rows(live, test)
    assert kept.train["text"].tolist() == ["A headline nobody tested"]
    assert text_key(variant) == text_key(second)


def test_the_written_training_data_holds_no_row_of_the_pinned_test_split(tmp_path: Path) -> None:
    source = write_news_file(tmp_path / "news.csv")
    # Each headline twice, once in capitals: the data repeats texts across its splits, as real data may.
    frame = pd.read_csv(source)
    pd.concat([frame, frame.assign(headline=frame["headline"].str.upper())]).to_csv(source, index=False)
    tags = pinned_tags(source)  # test_fraction 0.3: the default 0.2 would cut another split
    data = load_news(tags.data_config(), seed=0)
    test_keys = set(data.test["text"].map(text_key))
    others = pd.concat([data.train, data.validation])["text"]
    assert others.map(text_key).isin(test_keys).any()  # twins of test rows are among the original training rows
    live = _live([(data.test["text"].iloc[0], "World"), ("fresh live news", "Sports")], [("newest live news", "World")])
    used = write_retrain_data("news@champion", tags, live, tmp_path / "retrain", seed=42)
    assert used.train["text"].tolist() == ["fresh live news"]

    written = pd.read_csv(tmp_path / "retrain" / "train" / "train.csv")
    assert not set(written["text"].map(text_key)) & test_keys
    assert len(written) == int((~others.map(text_key).isin(test_keys)).sum()) + 1  # every other row, the live one
    assert "fresh live news" in set(written["text"])
    # The challenger's test split, read from its data folder, is the pinned one: its digests are the champion's.
    again = load_news(DataConfig(source=str(tmp_path / "retrain" / "train")), seed=0)
    record = dataset_record(again.test, "x", "test")
    assert (record["digest"], record["sha256"]) == (tags.test_digest, tags.test_sha256)


def test_a_changed_source_stops_the_retrain_before_anything_is_written(tmp_path: Path) -> None:
    source = write_news_file(tmp_path / "news.csv")
    tags = pinned_tags(source)
    write_news_file(source, seed=1)  # the same size, other rows
    live = _live([("fresh live news", "Sports")], [("newest live news", "World")])
    with pytest.raises(TestSplitChanged, match="news@champion: its data no longer gives the test split") as raised:
        write_retrain_data("news@champion", tags, live, tmp_path / "retrain", seed=42)
    assert "retrain from a version trained on the data as it is now" in str(raised.value)
    assert not (tmp_path / "retrain").exists()
