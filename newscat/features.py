"""Text normalization and tokenization: done once per study, shared by training and serving."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets
    import pandas as pd
    from transformers import PreTrainedTokenizerBase

    from newscat.data import NewsData

_ENTITY = re.compile(r"#(\d{2,4});")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Undo AG News escapes (`\\n`, stray backslashes, `#36;` for `$`) and squeeze whitespace.

    Applied to training texts and to served requests alike, so both see the same input.
    """
    text = text.replace("\\n", " ").replace("\\", " ")
    text = _ENTITY.sub(lambda m: chr(int(m.group(1))), text)
    return _SPACES.sub(" ", text).strip()


def load_tokenizer(model_path: str) -> PreTrainedTokenizerBase:
    """The (fast) tokenizer that belongs to the model; never runs remote code."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path, trust_remote_code=False)


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> dict:
    """Token ids without padding (padding happens per batch), truncated to `max_length`."""
    return tokenizer(
        [normalize_text(t) for t in texts],
        truncation=True,
        max_length=max_length,
        padding=False,
        return_token_type_ids=False,
    )


def encode_truncating(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int, *, max_chars: int
) -> tuple[list[list[int]], list[bool]]:
    """Token ids cut to `max_length` (as in training), and per text whether anything was cut off.

    Texts are first cut to `max_chars` characters, which bounds tokenizing time for absurdly long inputs.
    """
    cut = [text[:max_chars] for text in texts]
    # One token more than allowed tells "exactly max_length" from "longer": that extra id is dropped below.
    ids = encode_texts(tokenizer, cut, max_length + 1)["input_ids"]
    truncated = [len(row) > max_length or len(text) > max_chars for row, text in zip(ids, texts, strict=True)]
    ids = [row[: max_length - 1] + row[-1:] if len(row) > max_length else row for row in ids]
    return ids, truncated


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
