"""The lexical companion's fit for any number of classes: the served softmax equals scikit-learn's predict_proba for
2, 4 and 20 classes (a binary model is stored as two rows), and its share is chosen on well-formed probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from newscat.release.companion import (
    CHAR_NGRAMS,
    WORD_NGRAMS,
    C,
    choose_weight,
    companion_metrics,
    fit_lexical,
    softmax_form,
)
from newscat.serving.lexical import LexicalShapeError, mix, prepare_texts

WORDS = ["alpha", "bravo", "delta", "gamma", "kappa", "sigma", "omega", "theta", "zeta", "lambda"]


def keyword_texts(n_classes: int, per_class: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Texts whose class shows in a keyword of its own (`kw<class>`) among shared filler words."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label in range(n_classes):
        for _ in range(per_class):
            filler = rng.choice(WORDS, size=4)
            texts.append(f"{filler[0]} kw{label} {filler[1]} {filler[2]} {filler[3]}")
            labels.append(label)
    return texts, np.array(labels)


def sklearn_probabilities(texts: list[str], labels: np.ndarray, queries: list[str]) -> np.ndarray:
    """scikit-learn's own pipeline, fitted as `fit_lexical` fits it: the reference."""
    vectorizers = [
        TfidfVectorizer(analyzer="word", ngram_range=WORD_NGRAMS, sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, sublinear_tf=True),
    ]
    prepared = prepare_texts(texts, 4096)
    features = hstack([v.fit_transform(prepared) for v in vectorizers]).tocsr()
    classifier = LogisticRegression(C=C, max_iter=1000, random_state=0).fit(features, labels)
    query_features = hstack([v.transform(prepare_texts(queries, 4096)) for v in vectorizers]).tocsr()
    return classifier.predict_proba(query_features)


@pytest.mark.parametrize("n_classes", [2, 4, 20])
def test_served_probabilities_equal_scikit_learns_for_any_class_count(n_classes: int) -> None:
    texts, labels = keyword_texts(n_classes, per_class=6, seed=n_classes)
    model = fit_lexical(texts, labels, max_chars=4096, seed=0)
    queries, query_labels = keyword_texts(n_classes, per_class=2, seed=100 + n_classes)
    queries += ["nothing known here", "", "alpha bravo"]
    served = model.probabilities(prepare_texts(queries, 4096))
    assert model.n_classes == n_classes and served.shape == (len(queries), n_classes)
    assert served == pytest.approx(sklearn_probabilities(texts, labels, queries), abs=1e-9)
    assert served.sum(axis=1) == pytest.approx(np.ones(len(queries)), abs=1e-12)
    assert (served[: len(query_labels)].argmax(axis=1) == query_labels).mean() >= 0.9  # it learnt the keywords


def test_a_binary_model_is_stored_as_two_rows_not_one() -> None:
    texts, labels = keyword_texts(2, per_class=6, seed=0)
    model = fit_lexical(texts, labels, max_chars=4096, seed=0)
    assert model.coef.shape[0] == 2 and model.intercept.shape == (2,)
    assert not model.coef[0].any() and model.intercept[0] == 0.0  # class 0 is the reference row
    served = model.probabilities(prepare_texts(["alpha kw0 bravo", "alpha kw1 bravo"], 4096))
    assert served.argmax(axis=1).tolist() == [0, 1] and served.max() < 1.0


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.float64, (1, 5), elements=st.floats(-30, 30)),
    st.floats(-30, 30),
    arrays(np.float64, (3, 5), elements=st.floats(-3, 3)),
)
def test_binary_softmax_form_is_the_sigmoid(w: np.ndarray, b: float, x: np.ndarray) -> None:
    coef, intercept = softmax_form(w, np.array([b]))
    logits = x @ coef.T + intercept
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    sigmoid = 1.0 / (1.0 + np.exp(-(x @ w[0] + b)))
    assert softmax[:, 1] == pytest.approx(sigmoid, abs=1e-12)
    assert softmax[:, 0] == pytest.approx(1.0 - sigmoid, abs=1e-12)


def test_multinomial_coefficients_are_kept_as_they_are() -> None:
    coef, intercept = np.arange(12.0).reshape(3, 4), np.array([1.0, 2.0, 3.0])
    assert softmax_form(coef, intercept)[0] is coef and softmax_form(coef, intercept)[1] is intercept


def test_a_class_without_training_rows_is_refused() -> None:
    texts, labels = keyword_texts(3, per_class=4, seed=0)
    with pytest.raises(ValueError, match=r"cover class ids 0-3: missing \[3\], unknown \[\]"):
        fit_lexical(texts, labels, max_chars=4096, seed=0, n_classes=4)
    with pytest.raises(ValueError, match=r"missing \[\], unknown \[2\]"):
        fit_lexical(texts, labels, max_chars=4096, seed=0, n_classes=2)


def test_two_classes_choose_a_share_that_keeps_rows_distributions() -> None:
    texts, labels = keyword_texts(2, per_class=10, seed=1)
    model = fit_lexical(texts, labels, max_chars=4096, seed=0)
    val_texts, val_labels = keyword_texts(2, per_class=20, seed=2)
    lexical = model.probabilities(prepare_texts(val_texts, 4096))
    # An encoder right on 30 of 40 texts, narrowly wrong on the rest; the companion knows the keywords.
    truth = np.eye(2)[val_labels]
    encoder = 0.3 * truth + 0.35
    encoder[::4] = 0.45 * truth[::4] + 0.55 * truth[::4, ::-1]
    choice = choose_weight(encoder, lexical, val_labels)
    assert choice.kept and choice.mix_accuracy > choice.encoder_accuracy and choice.lexical_accuracy >= 0.9
    served = mix(encoder, lexical, choice.weight)
    assert served.shape == (40, 2) and served.sum(axis=1) == pytest.approx(np.ones(40), abs=1e-12)


def test_the_broken_one_row_companion_cannot_be_mixed_in() -> None:
    """What a binary model used to serve: a softmax over one row, all 1.0, shape (n, 1)."""
    labels = np.array([0, 1, 0, 1])
    encoder = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    with pytest.raises(LexicalShapeError, match=r"at least 2 classes"):
        choose_weight(encoder, np.ones((4, 1)), labels)
    with pytest.raises(LexicalShapeError, match=r"shape"):
        choose_weight(encoder, np.full((4, 3), 1 / 3), labels)
    with pytest.raises(LexicalShapeError, match=r"labels"):
        choose_weight(encoder, encoder, np.array([0, 1, 2, 1]))


def test_companion_metrics_refuse_probabilities_of_other_classes() -> None:
    labels = np.array([0, 1, 1, 0])
    two = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])
    assert companion_metrics(labels, {"encoder": two}, ("neg", "pos"))["encoder_accuracy"] == 1.0
    with pytest.raises(LexicalShapeError, match=r"3 classes"):
        companion_metrics(labels, {"encoder": two}, ("a", "b", "c"))
