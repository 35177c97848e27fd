from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from newscat.config import DataConfig
from newscat.data.load import DataError, load_news
from tests.helpers import CLASSES, make_news, write_ag_news_dir, write_keyword_data


def _frame(n_per_class: int = 10, seed: int = 0) -> pd.DataFrame:
    rows = make_news(n_per_class, seed)
    return pd.DataFrame(
        {"headline": [r[1] for r in rows], "body": [r[2] for r in rows], "topic": [CLASSES[r[0] - 1] for r in rows]}
    )


def _load(source: Path | str, **kwargs: object):
    limits = {"max_train_samples": None, "max_eval_samples": None, **kwargs}
    return load_news(DataConfig(source=str(source), **limits), seed=0)


def test_ag_news_layout_reads_labels_and_names(ag_news_dir: Path) -> None:
    data = _load(ag_news_dir)
    assert data.layout == "ag_news_csv"
    assert data.label_names == CLASSES
    assert len(data.train) + len(data.validation) == 4 * 24
    assert len(data.test) == 4 * 6
    assert set(data.train["label"]) == {0, 1, 2, 3}
    first = make_news(24, 1)[0]
    assert f"{first[1]} {first[2]}" in set(data.train["text"]) | set(data.validation["text"])


def test_validation_is_stratified_and_seeded(ag_news_dir: Path) -> None:
    a, b = _load(ag_news_dir, validation_fraction=0.25), _load(ag_news_dir, validation_fraction=0.25)
    assert a.validation["label"].value_counts().to_dict() == {0: 6, 1: 6, 2: 6, 3: 6}
    assert a.validation["text"].tolist() == b.validation["text"].tolist()


def test_max_train_samples_is_a_stratified_subsample(ag_news_dir: Path) -> None:
    data = _load(ag_news_dir, max_train_samples=40)
    assert len(data.train) == 40
    assert data.train["label"].value_counts().to_dict() == {0: 10, 1: 10, 2: 10, 3: 10}


def test_refit_rows_reach_beyond_the_tuning_subsample(ag_news_dir: Path) -> None:
    data = _load(ag_news_dir, max_train_samples=40)  # 96 rows: 10 validation, 86 in the pool, 40 for trials
    assert len(data.train_pool) == 86 and len(data.validation) == 10
    assert len(data.refit_rows(None, seed=0)) == 86
    limited = data.refit_rows(60, seed=0)
    assert len(limited) == 60 and set(limited["label"]) == {0, 1, 2, 3}
    assert data.refit_rows(20, seed=0) is data.train  # never fewer rows than the trials saw
    assert set(data.train["text"]) <= set(data.train_pool["text"])
    assert _load(ag_news_dir).train_pool is None  # no subsample, nothing more to refit on


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl", ".parquet"])
def test_file_directory_with_string_labels(tmp_path: Path, suffix: str) -> None:
    for split, seed in (("train", 0), ("test", 1)):
        frame, path = _frame(10, seed), tmp_path / f"{split}{suffix}"
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        elif suffix == ".json":
            frame.to_json(path, orient="records")
        elif suffix == ".jsonl":
            frame.to_json(path, orient="records", lines=True)
        else:
            frame.to_parquet(path)
    data = _load(tmp_path, text_columns=("headline", "body"), label_column="topic")
    assert data.layout == "files"
    assert data.label_names == tuple(sorted(CLASSES))  # distinct strings, sorted
    assert len(data.test) == 40
    row = data.test.iloc[0]
    assert data.label_names[row["label"]] in CLASSES
    assert row["text"].count(",") >= 1  # headline and body joined


def test_single_file_carves_a_fixed_test_split(tmp_path: Path) -> None:
    path = tmp_path / "news.csv"
    _frame(20).to_csv(path, index=False)
    a = _load(path, text_columns=("headline",), label_column="topic", test_fraction=0.25)
    b = _load(path, text_columns=("headline",), label_column="topic", test_fraction=0.25)
    assert a.layout == "file" and len(a.test) == 20
    assert a.test["text"].tolist() == b.test["text"].tolist()


def test_integer_labels_with_classes_txt(tmp_path: Path) -> None:
    rows = make_news(6, 0)
    frame = pd.DataFrame({"text": [r[1] for r in rows], "label": [r[0] for r in rows]})  # 1-based
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.to_csv(tmp_path / "test.csv", index=False)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES))
    data = _load(tmp_path)
    assert data.label_names == CLASSES
    text_to_label = dict(zip(frame["text"], frame["label"] - 1, strict=True))
    assert all(text_to_label[t] == y for t, y in zip(data.test["text"], data.test["label"], strict=True))


# --- bad data: every case fails with the file and the problem named ---------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or directory"):
        _load(tmp_path / "nope")


def test_directory_without_train_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no train file"):
        _load(tmp_path)


def test_missing_column_lists_what_exists(tmp_path: Path) -> None:
    _frame().to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match=r"train\.csv: missing column\(s\) text, label; columns found: headline"):
        _load(tmp_path)


def test_empty_test_split(ag_news_dir: Path) -> None:
    (ag_news_dir / "test.csv").write_text("")
    with pytest.raises(DataError, match="test split is empty"):
        _load(ag_news_dir)


def test_single_class(tmp_path: Path) -> None:
    write_ag_news_dir(tmp_path)
    rows = [r for r in make_news(10, 0) if r[0] == 2]
    (tmp_path / "train.csv").write_text("".join(f'"2","{r[1]}","{r[2]}"\n' for r in rows))
    with pytest.raises(DataError, match="single class \\(Sports\\)"):
        _load(tmp_path)


def test_test_labels_unseen_in_train(tmp_path: Path) -> None:
    write_ag_news_dir(tmp_path)
    rows = [r for r in make_news(10, 0) if r[0] != 4]
    (tmp_path / "train.csv").write_text("".join(f'"{r[0]}","{r[1]}","{r[2]}"\n' for r in rows))
    with pytest.raises(DataError, match="test labels never seen in train: Sci/Tech"):
        _load(tmp_path)


def test_unreadable_encoding(ag_news_dir: Path) -> None:
    (ag_news_dir / "train.csv").write_bytes('"1","Caf\xe9 news","text"\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"train\.csv: not UTF-8 text .*re-save it as UTF-8"):
        _load(ag_news_dir)


def test_malformed_row_names_the_line(ag_news_dir: Path) -> None:
    with (ag_news_dir / "train.csv").open("a") as handle:
        handle.write('"3","only a title"\n')
    with pytest.raises(DataError, match=r"train\.csv: line 97 has 2 fields"):
        _load(ag_news_dir)


def test_label_out_of_range(ag_news_dir: Path) -> None:
    with (ag_news_dir / "test.csv").open("a") as handle:
        handle.write('"7","title","description"\n')
    with pytest.raises(DataError, match=r"test\.csv: line 25 has label '7'; expected an integer 1-4"):
        _load(ag_news_dir)


def test_null_label_in_jsonl(tmp_path: Path) -> None:
    lines = [{"text": f"news {i}", "label": "a" if i % 2 else "b"} for i in range(10)] + [{"text": "x", "label": None}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    with pytest.raises(DataError, match=r"train\.jsonl: 1 row\(s\) have no 'label', first at row 11"):
        _load(tmp_path)


def test_unparseable_json(tmp_path: Path) -> None:
    (tmp_path / "train.json").write_text("[{not json")
    with pytest.raises(DataError, match=r"train\.json: cannot be parsed as JSON"):
        _load(tmp_path)


def test_test_label_not_in_classes(tmp_path: Path) -> None:
    _frame(5).to_csv(tmp_path / "train.csv", index=False)
    test = _frame(5).assign(topic="Weather")
    test.to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(DataError, match=r"test\.csv: label value\(s\) 'Weather' are not among the known classes"):
        _load(tmp_path, text_columns=("headline",), label_column="topic")


def test_class_with_one_row(tmp_path: Path) -> None:
    frame = _frame(5)
    frame = pd.concat([frame, pd.DataFrame({"headline": ["x"], "body": ["y"], "topic": ["Weather"]})])
    frame.to_csv(tmp_path / "train.csv", index=False)
    _frame(5).to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(DataError, match="Weather have fewer than 2 training rows"):
        _load(tmp_path, text_columns=("headline",), label_column="topic")


def test_hub_id_offline_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="no-such-owner/no-such-dataset: cannot load it from the Hugging Face Hub"):
        _load("no-such-owner/no-such-dataset")


@pytest.mark.parametrize("n_classes", [2, 20])
def test_any_number_of_named_classes_loads_with_every_class_in_every_split(tmp_path: Path, n_classes: int) -> None:
    names = write_keyword_data(tmp_path, n_classes, n_train=10, n_test=2)
    data = _load(tmp_path)
    assert data.label_names == tuple(sorted(names)) and len(data.label_names) == n_classes
    for frame in (data.train, data.validation, data.test):
        assert set(frame["label"]) == set(range(n_classes))
    assert len(data.test) == 2 * n_classes


def test_binary_integer_labels_keep_their_values_as_names(tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": [f"text {i}" for i in range(20)], "label": [i % 2 for i in range(20)]})
    frame.to_csv(tmp_path / "news.csv", index=False)
    data = _load(tmp_path / "news.csv")
    assert data.label_names == ("0", "1")
    assert set(data.train["label"]) == set(data.test["label"]) == {0, 1}


def test_a_class_named_in_classes_txt_but_never_used_is_refused(ag_news_dir: Path) -> None:
    """The encoder would get an output it never learns, and the lexical companion one row too few."""
    (ag_news_dir / "classes.txt").write_text("\n".join([*CLASSES, "Weather"]) + "\n")
    with pytest.raises(DataError, match=r"class\(es\) Weather have fewer than 2 training rows \(0\)"):
        _load(ag_news_dir)
