"""A version's test split is pinned: its tags hold everything that cuts it and its digests, the data is read back the
same way, and a split recomputed from the version's own data that differs stops the command with what to do."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
import pytest

from newscat.config import DataConfig
from newscat.data.load import NewsData, load_news
from newscat.registry.evaluations import TestSplitChanged, load_test_split, verify_test_split
from newscat.registry.tags import VersionTags
from newscat.tracking.datasets import dataset_record
from tests.helpers import pinned_tags, write_news_file


def _trained(source: Path) -> tuple[VersionTags, NewsData]:
    """A version's tags for data cut with test_fraction 0.3 (the default is 0.2), and the data as training read it."""
    tags = pinned_tags(source, 0.3)
    return tags, load_news(tags.data_config(), seed=42)


def test_a_carved_split_records_its_fraction_and_a_test_file_none(tmp_path: Path) -> None:
    source = write_news_file(tmp_path / "news.csv")
    carved = load_news(
        DataConfig(source=str(source), text_columns=("headline",), label_column="topic", test_fraction=0.3), seed=0
    )
    assert carved.test_fraction == 0.3 and len(carved.test) == 12
    folder = tmp_path / "folder"
    folder.mkdir()
    for split in ("train", "test"):
        write_news_file(folder / f"{split}.csv", seed=len(split))
    given = load_news(DataConfig(source=str(folder), text_columns=("headline",), label_column="topic"), seed=0)
    assert given.test_fraction is None


def test_the_tags_read_back_the_data_config_that_cuts_the_same_test_split(tmp_path: Path) -> None:
    tags, data = _trained(write_news_file(tmp_path / "news.csv"))
    assert tags.to_tags()["data.test_fraction"] == "0.3" and tags.test_rows == 12
    again = load_news(tags.data_config(), seed=7)  # another seed: the test split does not move with it
    assert again.test["text"].tolist() == data.test["text"].tolist()
    assert tags.data_config().test_fraction == 0.3
    # The default fraction (what versions without the tag are read with) cuts another split: rows of the pinned
    # test split land among its training rows (what a retrain would then learn).
    default = load_news(VersionTags(**{**tags.__dict__, "test_fraction": None}).data_config(), seed=42)
    assert set(data.test["text"]) & (set(default.train["text"]) | set(default.validation["text"]))


def test_the_own_data_unchanged_is_verified(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = write_news_file(tmp_path / "news.csv")
    tags, _ = _trained(source)
    caplog.set_level(logging.INFO, logger="newscat")
    news, record = load_test_split(tags.data_config(), 42, pinned=tags, label="models:/news/1")
    assert record["digest"] == tags.test_digest and len(news.test) == 12
    assert "models:/news/1: test split verified" in caplog.text
    # The same file named by a relative path is the same data: still compared.
    relative = os.path.relpath(source)
    assert verify_test_split("v", tags, tags.data_config(relative), record)


def test_a_changed_file_stops_with_what_differs_and_what_to_pass(tmp_path: Path) -> None:
    source = write_news_file(tmp_path / "news.csv")
    tags, _ = _trained(source)
    write_news_file(source, n_per_class=11)  # four rows more: another split comes out
    with pytest.raises(TestSplitChanged) as raised:
        load_test_split(tags.data_config(), 42, pinned=tags, label="models:/news/1")
    message = str(raised.value)
    assert message.startswith("models:/news/1: its data no longer gives the test split it was tested on")
    assert f"Recorded: 12 rows, digest {tags.test_digest}" in message and "recomputed now: 13 rows" in message
    assert "test_fraction 0.3" in message and "label column topic" in message and "pass --data" in message


def test_a_change_past_mlflows_10000_digested_rows_is_caught_by_the_sha256() -> None:
    test = pd.DataFrame({"text": [f"headline {i}" for i in range(10_001)], "label": [i % 4 for i in range(10_001)]})
    edited = test.copy()
    edited.loc[10_000, "text"] = "an edited headline"
    pinned, now = dataset_record(test, "/data/news.csv", "test"), dataset_record(edited, "/data/news.csv", "test")
    assert pinned["digest"] == now["digest"] and pinned["sha256"] != now["sha256"]  # why the sha256 is recorded
    tags = VersionTags(data_source="/data/news.csv", test_digest=pinned["digest"], test_sha256=pinned["sha256"])
    with pytest.raises(TestSplitChanged, match="sha256"):
        verify_test_split("v", tags, tags.data_config(), now)


def test_other_data_on_purpose_is_scored_without_the_pin(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tags, _ = _trained(write_news_file(tmp_path / "news.csv"))
    other = write_news_file(tmp_path / "other.csv", seed=3)
    caplog.set_level(logging.INFO, logger="newscat")
    _, record = load_test_split(tags.data_config(str(other)), 42, pinned=tags, label="v")
    assert record["digest"] != tags.test_digest  # scored all the same: the user asked for this data
    assert "not the data it was trained on as it was read: its pinned test split is not compared" in caplog.text
    # The own file read with other columns is other data on purpose too.
    renamed = pd.read_csv(tmp_path / "news.csv").rename(columns={"headline": "title"})
    renamed.to_csv(tmp_path / "news.csv", index=False)
    cfg = DataConfig(
        source=str(tmp_path / "news.csv"), text_columns=("title",), label_column="topic", test_fraction=0.3
    )
    assert not verify_test_split("v", tags, cfg, dataset_record(load_news(cfg, seed=0).test, cfg.source, "test"))


def test_a_version_registered_before_the_pin_is_said_not_verified(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = write_news_file(tmp_path / "news.csv")
    old = VersionTags.from_tags(
        {"data.source": str(source), "data.text_columns": "headline", "data.label_column": "topic"}
    )
    caplog.set_level(logging.INFO, logger="newscat")
    _, record = load_test_split(old.data_config(), 42, pinned=old, label="models:/news/1")
    assert record["rows"] == 8  # the default fraction, 0.2, all such a version records
    assert "models:/news/1 records no test split digest" in caplog.text and "is not verified" in caplog.text
