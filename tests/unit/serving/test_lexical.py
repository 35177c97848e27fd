"""The served lexical companion computes what scikit-learn computes, from plain files, and is mixed in only when it
wins on validation."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from newscat.export.pyfunc import export_classifier
from newscat.release.companion import CHAR_NGRAMS, WORD_NGRAMS, C, choose_weight, fit_lexical
from newscat.serving.artifacts import CorruptModelError, record_files, verify_files
from newscat.serving.lexical import VOCABULARY_FILE, WEIGHTS_FILE, LexicalModel, prepare_texts

TRAIN = [
    ("Stocks rally as oil prices fall on Wall Street", 2),
    ("Oil hits record high as OPEC cuts output", 2),
    ("Fed raises interest rates a quarter point", 2),
    ("Striker scores twice in cup final win", 1),
    ("Yankees beat Red Sox in extra innings", 1),
    ("Olympic champion wins gold in the 100m", 1),
    ("Apple unveils a new iPod with a colour screen", 3),
    ("NASA probe sends images from Saturn's moon", 3),
    ("Microsoft patches a flaw in Windows XP", 3),
    ("Rebels attack convoy in northern Iraq", 0),
    ("UN envoy calls for ceasefire in Darfur", 0),
    ("Elections in Ukraine disputed by opposition", 0),
]
TRICKY = [
    "Stocks   rally\tas OIL prices fall",  # runs of whitespace, a tab, capitals
    "a I x",  # words shorter than every n-gram
    "Café owners in Zürich — naïve pricing?",  # accents and a dash
    "never seen words zzzq qqqz",  # nothing in the vocabulary
    "",
    "win win win win cup cup",  # repeated terms (sublinear tf)
    "Oil #36;40 a barrel\\n record",  # AG News escapes, normalised like the encoder's text
]


def _fitted() -> tuple[LexicalModel, list[str], np.ndarray]:
    texts, labels = [t for t, _ in TRAIN], np.array([y for _, y in TRAIN])
    return fit_lexical(texts, labels, max_chars=4096, seed=0), texts, labels


def test_probabilities_match_scikit_learns_pipeline() -> None:
    model, texts, labels = _fitted()
    train = prepare_texts(texts, 4096)
    vectorizers = [
        TfidfVectorizer(analyzer="word", ngram_range=WORD_NGRAMS, sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, sublinear_tf=True),
    ]
    features = hstack([v.fit_transform(train) for v in vectorizers]).tocsr()
    classifier = LogisticRegression(C=C, max_iter=1000, random_state=0).fit(features, labels)
    queries = prepare_texts(TRICKY + texts, 4096)
    expected = classifier.predict_proba(hstack([v.transform(queries) for v in vectorizers]).tocsr())
    assert model.probabilities(queries) == pytest.approx(expected, abs=1e-9)
    assert model.probabilities(queries[:1]).sum() == pytest.approx(1.0)


def test_saved_as_json_and_numbers_only_and_checked_like_the_weights(tmp_path: Path) -> None:
    model, _, _ = _fitted()
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"weights")
    model_dir = export_classifier(checkpoint, tmp_path / "model", max_length=128, base_model="m")
    files = model.save(model_dir)
    record_files(model_dir, files)
    assert files == [VOCABULARY_FILE, WEIGHTS_FILE]
    json.loads((model_dir / VOCABULARY_FILE).read_text("utf-8"))
    with zipfile.ZipFile(model_dir / WEIGHTS_FILE) as archive:  # .npy members of plain numbers: no object arrays
        assert all(name.endswith(".npy") for name in archive.namelist())
    loaded = LexicalModel.load(model_dir, weight=0.3)
    assert loaded.weight == 0.3
    assert loaded.probabilities(TRICKY) == pytest.approx(model.probabilities(TRICKY), abs=1e-6)

    settings = json.loads((model_dir / "newscat.json").read_text("utf-8"))
    verify_files(model_dir, settings)
    vocabulary = model_dir / VOCABULARY_FILE
    vocabulary.write_text(vocabulary.read_text("utf-8").replace('"oil"', '"gas"'), "utf-8")
    with pytest.raises(CorruptModelError, match=r"vocabulary\.json"):
        verify_files(model_dir, settings)


def test_the_share_is_chosen_on_validation_and_zero_when_the_companion_does_not_help() -> None:
    labels = np.array([0, 1, 2, 3] * 25)
    rng = np.random.default_rng(0)
    truth = np.eye(4)[labels]
    # An encoder right on 80 of 100 texts (and narrowly wrong on the others), a companion right on all.
    encoder = 0.6 * truth + 0.1
    wrong = np.arange(100) < 20
    encoder[wrong] = 0.15 + 0.25 * np.roll(truth[wrong], 1, axis=1) + 0.15 * truth[wrong]
    helpful = 0.6 * truth + 0.1
    choice = choose_weight(encoder, helpful, labels)
    assert choice.kept and choice.mix_accuracy > choice.encoder_accuracy
    assert choice.mix_log_loss < choice.encoder_log_loss

    noise = rng.dirichlet(np.ones(4), size=100)
    useless = choose_weight(truth * 0.9 + 0.025, noise, labels)
    assert not useless.kept and useless.weight == 0.0
    assert useless.mix_accuracy == useless.encoder_accuracy == 1.0


def test_companion_metrics_score_each_model_alone_per_class() -> None:
    from newscat.release.companion import companion_metrics

    labels = np.array([0, 1, 1, 0])
    right = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])
    scores = companion_metrics(labels, {"encoder": right, "lexical": right[:, ::-1]}, ("World", "Sports"))
    assert scores["encoder_accuracy"] == 1.0 and scores["encoder_f1_World"] == 1.0
    assert scores["lexical_accuracy"] == 0.0 and scores["lexical_macro_f1"] == 0.0
    assert scores["encoder_ece"] == pytest.approx(1 - np.mean([0.9, 0.8, 0.6, 0.7]))
