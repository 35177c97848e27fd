from __future__ import annotations

from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerBase

from newscat.data.text import encode_truncating
from newscat.serving.tokens import TokenEncoder

TRICKY = [
    "Oil prices climb as OPEC cuts output. Crude rose 3% on Tuesday after the cartel said...",
    "",
    "  padded   spaces  ",
    "Ünïcödé café 😀 naïve façade",
    "#36;5 billion deal \\ escaped \\n newline",
    "tab\there\nnewline\r\n",
    "\u200b\u202e\x00 zero-width",
    "word " * 300,
]


@pytest.fixture(scope="module")
def model_dir(tokenizer: PreTrainedTokenizerBase, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(target)
    return target


def test_served_ids_equal_the_training_ids(tokenizer: PreTrainedTokenizerBase, model_dir: Path) -> None:
    """The served model reads tokenizer.json with `tokenizers` alone: same ids and truncation flags as training."""
    expected = encode_truncating(tokenizer, TRICKY, 32, max_chars=32 * 32)
    assert TokenEncoder(model_dir, 32).encode(TRICKY, max_chars=32 * 32) == expected
    assert expected[1][-1] is True and expected[1][1] is False  # the long text is flagged, the empty one is not


def test_padding_right_with_a_mask(model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    encoder = TokenEncoder(model_dir, 16)
    ids, mask = encoder.pad([[101, 5, 102], [101, 102]])
    assert ids.tolist() == [[101, 5, 102], [101, 102, tokenizer.pad_token_id]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]] and ids.dtype.name == mask.dtype.name == "int64"


def test_counts_give_tokens_read_and_unknown_ones(model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    encoder = TokenEncoder(model_dir, 32)
    texts = ["Oil prices climb", "\U0001f980\U0001f99e crabs", "word " * 300]
    tokens, unknown = encoder.counts(texts, max_chars=32 * 32)
    expected = [tokenizer(t, truncation=True, max_length=32)["input_ids"] for t in texts]
    assert tokens == [len(ids) for ids in expected] and tokens[2] == 32  # cut like the model reads it
    assert unknown == [ids.count(tokenizer.unk_token_id) for ids in expected]
    assert unknown[0] == unknown[2] == 0 and unknown[1] >= 1  # emoji are not in BERT's vocabulary
