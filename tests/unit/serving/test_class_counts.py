"""Served probabilities are distributions for any number of classes (2-30): the encoder's softmax, the lexical
companion's and their mix; shapes that do not fit together raise instead of broadcasting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from newscat.serving.lexical import Block, LexicalModel, LexicalShapeError, mix
from newscat.serving.model import class_probabilities

CLASSES = st.integers(2, 30)
VOCABULARY = ("oil", "cup", "chip", "vote", "rain", "oil cup", "cup final")


class RowEncoder:
    """Stands in for `TokenEncoder`: text i is the token ids [i + 1] * (1 + i % 5), so the engine can tell which
    text each row of a (length-sorted, batched) pass is."""

    max_length = 16

    def encode(self, texts: list[str], *, max_chars: int) -> tuple[list[list[int]], list[bool]]:
        return [[i + 1] * (1 + i % 5) for i in range(len(texts))], [False] * len(texts)

    def pad(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(row) for row in rows)
        ids = np.array([row + [0] * (width - len(row)) for row in rows], dtype=np.int64)
        return ids, (ids > 0).astype(np.int64)


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@st.composite
def logit_tables(draw: st.DrawFn) -> np.ndarray:
    """texts x classes logits, from tiny to huge (a naive softmax overflows at 710)."""
    shape = (draw(st.integers(1, 40)), draw(CLASSES))
    return draw(arrays(np.float64, shape, elements=st.floats(-1e4, 1e4)))


@settings(max_examples=60, deadline=None)
@given(logit_tables(), st.integers(8, 96))
def test_the_served_softmax_gives_each_text_its_own_distribution(table: np.ndarray, tokens_per_batch: int) -> None:
    def engine(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return table[ids[:, 0] - 1].astype(np.float32)  # the engines answer float32 logits

    probabilities, truncated = class_probabilities(RowEncoder(), engine, ["t"] * len(table), tokens_per_batch)
    assert probabilities.shape == table.shape and not truncated.any()
    assert np.isfinite(probabilities).all() and (probabilities >= 0.0).all()
    assert probabilities.sum(axis=1) == pytest.approx(np.ones(len(table)), abs=1e-9)
    assert probabilities == pytest.approx(_softmax(table.astype(np.float32).astype(np.float64)), abs=1e-9)


@st.composite
def lexical_models(draw: st.DrawFn) -> LexicalModel:
    """A one-block word model over `VOCABULARY` with random idf, coefficients and intercepts."""
    k = draw(CLASSES)
    idf = draw(arrays(np.float64, len(VOCABULARY), elements=st.floats(1.0, 5.0)))
    coef = draw(arrays(np.float64, (k, len(VOCABULARY)), elements=st.floats(-500, 500)))
    intercept = draw(arrays(np.float64, k, elements=st.floats(-500, 500)))
    block = Block("word", (1, 2), {term: i for i, term in enumerate(VOCABULARY)}, idf)
    return LexicalModel((block,), coef, intercept, weight=draw(st.floats(0.0, 1.0)))


TEXTS = st.lists(st.lists(st.sampled_from([*VOCABULARY, "zzz", "x"]), max_size=8).map(" ".join), max_size=12)


@settings(max_examples=60, deadline=None)
@given(lexical_models(), TEXTS)
def test_the_lexical_companion_gives_a_distribution_per_text(model: LexicalModel, texts: list[str]) -> None:
    probabilities = model.probabilities(texts)
    assert probabilities.shape == (len(texts), model.n_classes)
    assert np.isfinite(probabilities).all() and (probabilities >= 0.0).all()
    assert probabilities.sum(axis=1) == pytest.approx(np.ones(len(texts)), abs=1e-9)


@st.composite
def distribution_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    shape = (draw(st.integers(0, 30)), draw(CLASSES))
    logits = arrays(np.float64, shape, elements=st.floats(-50, 50))
    return _softmax(draw(logits)), _softmax(draw(logits))


@settings(max_examples=80, deadline=None)
@given(distribution_pairs(), st.floats(0.0, 1.0))
def test_a_mix_of_distributions_is_a_distribution(pair: tuple[np.ndarray, np.ndarray], weight: float) -> None:
    encoder, lexical = pair
    mixed = mix(encoder, lexical, weight)
    assert mixed.shape == encoder.shape and (mixed >= 0.0).all()
    assert mixed.sum(axis=1) == pytest.approx(np.ones(len(encoder)), abs=1e-9)


def test_mix_refuses_what_numpy_would_broadcast() -> None:
    encoder = _softmax(np.random.default_rng(0).normal(size=(5, 4)))
    cases = {
        "one column (a binary companion's old answer)": np.ones((5, 1)),
        "another class count": _softmax(np.zeros((5, 3))),
        "one row for every text": encoder[:1],
        "rows that do not sum to 1": encoder * 1.01,
        "negative values": np.tile([1.5, -0.5, 0.0, 0.0], (5, 1)),
        "NaN": np.full((5, 4), np.nan),
        "a vector": np.full(4, 0.25),
    }
    for why, lexical in cases.items():
        with pytest.raises(LexicalShapeError):
            mix(encoder, lexical, 0.3)
            pytest.fail(why)
    with pytest.raises(LexicalShapeError, match=r"\[0, 1\]"):
        mix(encoder, encoder, 1.5)


def _block(terms: int = 3) -> Block:
    return Block("word", (1, 1), {f"w{i}": i for i in range(terms)}, np.ones(terms))


@pytest.mark.parametrize(
    ("coef", "intercept"),
    [
        (np.zeros((1, 3)), np.zeros(1)),  # a binary scikit-learn model's one row
        (np.zeros((4, 3)), np.zeros(3)),  # intercepts of another class count
        (np.zeros((4, 2)), np.zeros(4)),  # columns that are not the features
        (np.zeros(3), np.zeros(1)),  # not a matrix
    ],
    ids=["one-row", "intercepts", "features", "vector"],
)
def test_a_lexical_model_whose_shapes_do_not_fit_is_refused(coef: np.ndarray, intercept: np.ndarray) -> None:
    with pytest.raises(LexicalShapeError):
        LexicalModel((_block(),), coef, intercept, weight=0.2)


def test_loading_checks_the_companion_against_the_encoders_classes(tmp_path: Path) -> None:
    model = LexicalModel((_block(),), np.arange(6.0).reshape(2, 3), np.zeros(2), weight=0.2)
    model.save(tmp_path)
    assert LexicalModel.load(tmp_path, 0.2).n_classes == 2  # no config.json: nothing to compare with
    assert LexicalModel.load(tmp_path, 0.2, n_classes=2).n_classes == 2
    with pytest.raises(LexicalShapeError, match="the lexical companion has 2 classes, the encoder 20"):
        LexicalModel.load(tmp_path, 0.2, n_classes=20)
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {str(i): f"c{i}" for i in range(3)}}))
    with pytest.raises(LexicalShapeError, match="the encoder 3"):
        LexicalModel.load(tmp_path, 0.2)
