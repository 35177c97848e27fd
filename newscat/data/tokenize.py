"""Tokenize a study's splits once (trials reuse them), with the same ids the served model computes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from newscat.data.text import encode_texts

if TYPE_CHECKING:
    import datasets
    import pandas as pd
    from transformers import PreTrainedTokenizerBase

    from newscat.data.load import NewsData


def load_tokenizer(model_path: str) -> PreTrainedTokenizerBase:
    """The (fast) tokenizer that belongs to the model; never runs remote code."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path, trust_remote_code=False)


def tokenize_news(tokenizer: PreTrainedTokenizerBase, data: NewsData, max_length: int) -> datasets.DatasetDict:
    """Tokenize the train and validation splits once; trials reuse the result.

    The test split is left out: it is scored through the logged pyfunc model, as it will be served.
    """
    import datasets

    return datasets.DatasetDict(
        {name: tokenize_rows(tokenizer, getattr(data, name), max_length) for name in ("train", "validation")}
    )


def tokenize_rows(tokenizer: PreTrainedTokenizerBase, frame: pd.DataFrame, max_length: int) -> datasets.Dataset:
    """One frame of `text`/`label` rows as a Dataset of token ids, labels and lengths (for length grouping)."""
    import datasets

    encoded = encode_texts(tokenizer, frame["text"].tolist(), max_length)
    encoded["labels"] = frame["label"].tolist()
    encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
    return datasets.Dataset.from_dict(dict(encoded))
