"""Token ids for the served model, straight from `tokenizer.json` with the `tokenizers` library.

No transformers here: a model served through ONNX Runtime needs neither torch nor transformers. The ids are the
ones training used (`newscat.data.text.encode_texts` goes through the same `tokenizer.json`); a test checks it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from newscat.data.text import normalize_text


class TokenEncoder:
    """Texts to padded id and mask arrays, cut to `max_length` tokens like training, telling which texts were cut."""

    def __init__(self, model_dir: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.max_length = max_length
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_padding()
        # One token more than allowed tells "exactly max_length" from "longer"; that extra id is dropped below.
        self._tokenizer.enable_truncation(max_length + 1)
        self.pad_id = self._tokenizer.token_to_id(_pad_token(model_dir)) or 0
        unknown = getattr(self._tokenizer.model, "unk_token", None)  # WordPiece/BPE name one; byte-level BPE none
        self.unknown_id = self._tokenizer.token_to_id(unknown) if unknown else None

    def encode(self, texts: list[str], *, max_chars: int) -> tuple[list[list[int]], list[bool]]:
        """Token ids per text (special tokens included) and whether anything was cut off.

        Texts are first cut to `max_chars` characters, which bounds tokenizing time for absurdly long inputs.
        """
        cut = [normalize_text(text[:max_chars]) for text in texts]
        try:
            ids = [encoding.ids for encoding in self._tokenizer.encode_batch(cut)]
        except Exception as exc:  # the Rust tokenizer's errors carry no row: find it, so the 400 can name it
            raise UnreadableText(_first_unreadable(self._tokenizer, cut), exc) from exc
        limit = self.max_length
        truncated = [len(row) > limit or len(text) > max_chars for row, text in zip(ids, texts, strict=True)]
        return [row[: limit - 1] + row[-1:] if len(row) > limit else row for row in ids], truncated

    def counts(self, texts: list[str], *, max_chars: int) -> tuple[list[int], list[int]]:
        """Per text, the tokens the model read and how many of them were the unknown token (what monitoring
        compares between live traffic and the training reference)."""
        rows, _ = self.encode(texts, max_chars=max_chars)
        unknown = [row.count(self.unknown_id) if self.unknown_id is not None else 0 for row in rows]
        return [len(row) for row in rows], unknown

    def pad(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """`input_ids` and `attention_mask` (int64), padded on the right to the longest row."""
        width = max(len(row) for row in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask


class UnreadableText(ValueError):
    """A text the tokenizer refuses; `row` is its index in the list encoded."""

    def __init__(self, row: int, cause: BaseException) -> None:
        super().__init__(f"row {row}: the tokenizer cannot read this text ({type(cause).__name__}: {cause})")
        self.row = row


def _first_unreadable(tokenizer: object, texts: list[str]) -> int:
    """The index of the first text the tokenizer refuses on its own (-1: each one passes alone)."""
    for row, text in enumerate(texts):
        try:
            tokenizer.encode(text)
        except Exception:
            return row
    return -1


def _pad_token(model_dir: Path) -> str:
    """The padding token the tokenizer was saved with ([PAD] for BERT)."""
    config = model_dir / "tokenizer_config.json"
    if config.is_file():
        token = json.loads(config.read_text(encoding="utf-8")).get("pad_token")
        if isinstance(token, dict):  # older files store AddedToken objects
            token = token.get("content")
        if isinstance(token, str):
            return token
    return "[PAD]"
