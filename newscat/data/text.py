"""The text the model reads: the one AG News join, normalization and token ids.

Training, `newscat predict`, Spark scoring and the served model all go through these functions, so the model sees
the same text wherever it comes from. This module ships inside every logged model: it imports nothing heavy.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_ENTITY = re.compile(r"#(\d{2,4});")
_SPACES = re.compile(r"\s+")


def join_fields(*fields: str) -> str:
    """One text from several fields (AG News: title, description), joined by a space and stripped."""
    return " ".join(fields).strip()


def normalize_text(text: str) -> str:
    """Undo AG News escapes (`\\n`, stray backslashes, `#36;` for `$`) and squeeze whitespace.

    Applied to training texts and to served requests alike, so both see the same input.
    """
    text = text.replace("\\n", " ").replace("\\", " ")
    text = _ENTITY.sub(lambda m: chr(int(m.group(1))), text)
    return _SPACES.sub(" ", text).strip()


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
