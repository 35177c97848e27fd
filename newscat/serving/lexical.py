"""The lexical companion as served: TF-IDF word and character n-grams with a linear classifier, computed with numpy
from plain files (a JSON vocabulary and a numpy archive of numbers: no scikit-learn, no pickles), and mixed with the
encoder's class probabilities.

The n-grams are those of scikit-learn's `TfidfVectorizer` (analyzers `word` and `char_wb`, lowercase, sublinear tf,
l2-normalised blocks); `tests/unit/serving/test_lexical.py` checks that both give the same probabilities.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np

from newscat.data.text import normalize_text

LEXICAL_DIR = "lexical"
VOCABULARY_FILE = f"{LEXICAL_DIR}/vocabulary.json"
WEIGHTS_FILE = f"{LEXICAL_DIR}/weights.npz"
_WORD = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern
_WHITESPACE = re.compile(r"\s\s+")
SUM_TOLERANCE = 1e-6  # how far a row of class probabilities may sum from 1 (float64 softmax: ~1e-15)


class LexicalShapeError(ValueError):
    """Probabilities or weights whose shapes do not fit together (classes, texts, features)."""


@dataclass(frozen=True)
class Block:
    """One vectorizer's features: its analyzer, n-gram range, vocabulary (term -> column) and idf weights."""

    analyzer: str  # word | char_wb
    ngram_range: tuple[int, int]
    vocabulary: dict[str, int]
    idf: np.ndarray

    def terms(self, text: str) -> list[str]:
        """The n-grams of a text, as scikit-learn's analyzer of the same name makes them."""
        text = text.lower()
        low, high = self.ngram_range
        if self.analyzer == "word":
            return _word_ngrams(_WORD.findall(text), low, high)
        return _char_wb_ngrams(_WHITESPACE.sub(" ", text), low, high)

    def counts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(text index, column, count) of every known n-gram of every text (unknown n-grams are dropped).

        The vocabulary lookups run in `map` and the counting in numpy: a Python loop per n-gram took twice as long.
        """
        lookup = self.vocabulary.get
        columns = [
            np.fromiter(map(lookup, grams, repeat(-1)), np.int64, len(grams)) for grams in map(self.terms, texts)
        ]
        found = np.concatenate(columns) if columns else np.zeros(0, dtype=np.int64)
        rows = np.repeat(np.arange(len(texts), dtype=np.int64), [len(c) for c in columns])
        known = found >= 0
        width = max(len(self.vocabulary), 1)
        keys, counts = np.unique(rows[known] * width + found[known], return_counts=True)
        return keys // width, keys % width, counts.astype(np.float64)


def _word_ngrams(tokens: list[str], low: int, high: int) -> list[str]:
    return [" ".join(tokens[i : i + n]) for n in range(low, high + 1) for i in range(len(tokens) - n + 1)]


def _char_wb_ngrams(text: str, low: int, high: int) -> list[str]:
    grams = []
    for word in text.split():
        word = f" {word} "
        for n in range(low, high + 1):
            grams.extend(word[i : i + n] for i in range(max(1, len(word) - n + 1)))
            if len(word) <= n:  # a short word (padded) is counted once, whatever n
                break
    return grams


@dataclass(frozen=True)
class LexicalModel:
    """Feature blocks and a multinomial linear classifier over their concatenation.

    Any number of classes from 2: one coefficient row and one intercept per class, softmax over them (a binary
    logistic regression is stored as the equivalent two rows, see `newscat.release.companion.softmax_form`).
    """

    blocks: tuple[Block, ...]
    coef: np.ndarray  # classes x features (blocks side by side, in order)
    intercept: np.ndarray  # classes
    weight: float  # its share in the served mix; the encoder's is 1 - weight

    def __post_init__(self) -> None:
        # A wrong shape would not fail later: numpy broadcasts one row against every class (all 1.0 after softmax).
        features = sum(len(b.idf) for b in self.blocks)
        if self.coef.ndim != 2 or self.intercept.ndim != 1:
            raise LexicalShapeError(
                f"coef must be classes x features and intercept one per class; got shapes {self.coef.shape} and "
                f"{self.intercept.shape}"
            )
        classes = self.coef.shape[0]
        if classes < 2 or classes != len(self.intercept) or self.coef.shape[1] != features:
            raise LexicalShapeError(
                f"coef {self.coef.shape} and intercept {self.intercept.shape} do not fit {features} features and one "
                "row per class (at least 2 classes)"
            )
        if not 0.0 <= self.weight <= 1.0:
            raise LexicalShapeError(f"the lexical share must be in [0, 1], got {self.weight}")

    @property
    def n_classes(self) -> int:
        return int(self.coef.shape[0])

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Class probabilities, shape (len(texts), n_classes): every text's features in one sparse pass per block
        (sublinear tf x idf, l2-normalised per text and block), then the linear layer and a softmax."""
        n = len(texts)
        logits = np.tile(self.intercept, (n, 1))
        offset = 0
        for block in self.blocks:
            rows, columns, counts = block.counts(texts)
            values = (1.0 + np.log(counts)) * block.idf[columns]
            norms = np.sqrt(np.bincount(rows, weights=values**2, minlength=n))
            values = values / np.where(norms[rows] > 0, norms[rows], 1.0)
            for k in range(logits.shape[1]):
                logits[:, k] += np.bincount(rows, weights=values * self.coef[k, offset + columns], minlength=n)
            offset += len(block.idf)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def save(self, model_dir: Path) -> list[str]:
        """Write the plain files into `model_dir`; returns their paths relative to it (for the SHA-256 record)."""
        (model_dir / LEXICAL_DIR).mkdir(parents=True, exist_ok=True)
        vocabulary = [
            {
                "analyzer": b.analyzer,
                "ngram_range": list(b.ngram_range),
                "terms": sorted(b.vocabulary, key=b.vocabulary.__getitem__),
            }
            for b in self.blocks
        ]
        (model_dir / VOCABULARY_FILE).write_text(json.dumps({"blocks": vocabulary}, ensure_ascii=False), "utf-8")
        idf = {f"idf_{i}": b.idf for i, b in enumerate(self.blocks)}
        np.savez(model_dir / WEIGHTS_FILE, coef=self.coef.astype(np.float32), intercept=self.intercept, **idf)
        return [VOCABULARY_FILE, WEIGHTS_FILE]

    @classmethod
    def load(cls, model_dir: Path, weight: float, n_classes: int | None = None) -> LexicalModel:
        """Read the files `save` wrote (numbers only: `allow_pickle=False`), checked against `n_classes`, the
        encoder's class count (default: the length of `id2label` in the model's config.json, when it has one)."""
        vocabulary = json.loads((model_dir / VOCABULARY_FILE).read_text("utf-8"))["blocks"]
        with np.load(model_dir / WEIGHTS_FILE, allow_pickle=False) as arrays:
            blocks = tuple(
                Block(
                    analyzer=v["analyzer"],
                    ngram_range=(int(v["ngram_range"][0]), int(v["ngram_range"][1])),
                    vocabulary={term: i for i, term in enumerate(v["terms"])},
                    idf=arrays[f"idf_{i}"].astype(np.float64),
                )
                for i, v in enumerate(vocabulary)
            )
            model = cls(blocks, arrays["coef"].astype(np.float64), arrays["intercept"].astype(np.float64), weight)
        expected = n_classes if n_classes is not None else _encoder_classes(model_dir)
        if expected is not None and model.n_classes != expected:
            raise LexicalShapeError(
                f"{model_dir / WEIGHTS_FILE}: the lexical companion has {model.n_classes} classes, the encoder "
                f"{expected}: the two cannot be mixed"
            )
        return model


def _encoder_classes(model_dir: Path) -> int | None:
    """The encoder's class count from its config.json (None: no config.json, as in a bare companion folder)."""
    config = model_dir / "config.json"
    if not config.is_file():
        return None
    return len(json.loads(config.read_text("utf-8"))["id2label"])


def prepare_texts(texts: list[str], max_chars: int) -> list[str]:
    """What the companion reads, in training and serving alike: the encoder's normalised text, cut to `max_chars`
    characters (which bounds the time an absurdly long request costs)."""
    return [normalize_text(text[:max_chars]) for text in texts]


def mix(encoder: np.ndarray, lexical: np.ndarray, weight: float) -> np.ndarray:
    """The served probabilities: a weighted average of the encoder's and the lexical model's.

    Both must be (texts x classes) with rows summing to 1: anything else is a broken model, and numpy would
    broadcast it into rows that no longer sum to 1 rather than fail.
    """
    for name, probabilities in (("encoder", encoder), ("lexical", lexical)):
        check_probabilities(probabilities, name)
    if encoder.shape != lexical.shape:
        raise LexicalShapeError(
            f"cannot mix encoder probabilities of shape {encoder.shape} with lexical ones of shape {lexical.shape}: "
            "the two models must score the same texts over the same classes"
        )
    if not 0.0 <= weight <= 1.0:
        raise LexicalShapeError(f"the lexical share must be in [0, 1], got {weight}")
    return (1.0 - weight) * encoder + weight * lexical


def check_probabilities(probabilities: np.ndarray, name: str, n_classes: int | None = None) -> None:
    """Raise unless `probabilities` is (rows x classes), at least 2 classes (`n_classes` if given), every row a
    distribution (non-negative, summing to 1 within `SUM_TOLERANCE`)."""
    shape = np.shape(probabilities)
    if len(shape) != 2 or shape[1] < 2 or (n_classes is not None and shape[1] != n_classes):
        wanted = f"{n_classes} classes" if n_classes is not None else "at least 2 classes"
        raise LexicalShapeError(f"{name} probabilities must be texts x classes ({wanted}); got shape {shape}")
    if shape[0] == 0:
        return
    gap = float(np.abs(probabilities.sum(axis=1) - 1.0).max())
    if not gap <= SUM_TOLERANCE or float(probabilities.min()) < 0.0:  # `not <=` also catches NaN
        raise LexicalShapeError(
            f"{name} probabilities are not distributions: a row's sum is {gap:.2g} away from 1, or a value is negative"
        )
