"""The lexical companion: TF-IDF word and character n-grams with a logistic regression, trained on the final model's
rows, and its share in the served mix chosen on the validation split (never on test).

Word n-grams catch names and phrases the 128-token encoder dilutes; character n-grams catch spelling variants. The
two disagree on different texts, so their averaged probabilities beat either (measured: docs/performance.md).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np

from newscat.evaluation.metrics import classification_metrics
from newscat.evaluation.report import expected_calibration_error
from newscat.serving.lexical import Block, LexicalModel, LexicalShapeError, check_probabilities, mix, prepare_texts

log = logging.getLogger("newscat")
WORD_NGRAMS = (1, 2)
CHAR_NGRAMS = (3, 6)
C = 10.0  # inverse L2 strength; chosen on the validation split of AG News (docs/performance.md)
WEIGHTS = tuple(round(0.05 * i, 2) for i in range(19))  # the lexical share tried (0: encoder alone)


def fit_lexical(
    texts: list[str], labels: np.ndarray, *, max_chars: int, seed: int, n_classes: int | None = None
) -> LexicalModel:
    """Fit the vectorizers and the classifier on the training texts (weight 0 until `choose_weight`), over
    `n_classes` classes (default: the largest label + 1), each of which must have training rows."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    prepared = prepare_texts(texts, max_chars)
    vectorizers = [
        TfidfVectorizer(analyzer="word", ngram_range=WORD_NGRAMS, sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, sublinear_tf=True),
    ]
    labels = np.asarray(labels)
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    seen = {int(y) for y in labels}
    missing, unknown = sorted(set(range(n_classes)) - seen), sorted(seen - set(range(n_classes)))
    if missing or unknown:  # scikit-learn fits a row per class seen: they would no longer line up with the encoder's
        raise ValueError(
            f"the lexical companion's training labels must cover class ids 0-{n_classes - 1}: "
            f"missing {missing}, unknown {unknown}"
        )
    features = hstack([v.fit_transform(prepared) for v in vectorizers]).tocsr()
    classifier = LogisticRegression(C=C, max_iter=1000, random_state=seed).fit(features, labels)
    coef, intercept = softmax_form(classifier.coef_, classifier.intercept_)
    blocks = tuple(
        Block(v.analyzer, v.ngram_range, {t: int(i) for t, i in v.vocabulary_.items()}, v.idf_) for v in vectorizers
    )
    log.info(
        "lexical companion: %d n-gram features from %d texts in %.0f s",
        features.shape[1],
        len(texts),
        time.perf_counter() - started,
    )
    return LexicalModel(blocks, coef, intercept, weight=0.0)


def softmax_form(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's coefficients as one row per class, for a softmax.

    A binary LogisticRegression keeps one row `w, b` (class 1 against class 0): rows `0, w` and intercepts `0, b`
    give softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)], exactly its predict_proba. Multinomial models already have
    one row per class.
    """
    if coef.shape[0] != 1:
        return coef, intercept
    return np.vstack([np.zeros_like(coef), coef]), np.concatenate([np.zeros_like(intercept), intercept])


@dataclass(frozen=True)
class MixChoice:
    """The lexical share chosen on validation, and the validation scores behind the choice."""

    weight: float  # 0: the companion did not win and is not served
    encoder_accuracy: float
    lexical_accuracy: float
    mix_accuracy: float  # at `weight`
    encoder_log_loss: float
    mix_log_loss: float

    @property
    def kept(self) -> bool:
        return self.weight > 0.0

    def metrics(self) -> dict[str, float]:
        """Validation metrics of the choice (logged on the release model, linked to the validation set)."""
        return {
            "lexical_weight": self.weight,
            "eval_encoder_accuracy": self.encoder_accuracy,
            "eval_lexical_accuracy": self.lexical_accuracy,
            "eval_mix_accuracy": self.mix_accuracy,
            "eval_encoder_log_loss": self.encoder_log_loss,
            "eval_mix_log_loss": self.mix_log_loss,
        }


def choose_weight(encoder: np.ndarray, lexical: np.ndarray, labels: np.ndarray) -> MixChoice:
    """The lexical share with the lowest validation log loss; kept only if it also loses no validation accuracy.

    Log loss rather than accuracy picks the share: on a few hundred validation rows accuracy moves in steps of
    one text, log loss moves with every probability. `mix` raises if the two do not score the same classes.
    """
    _check_labels(labels, encoder)
    losses = {w: _log_loss(mix(encoder, lexical, w), labels) for w in WEIGHTS}
    best = float(min(losses, key=losses.__getitem__))
    accuracy = {w: _accuracy(mix(encoder, lexical, w), labels) for w in (0.0, best)}
    weight = best if accuracy[best] >= accuracy[0.0] and losses[best] < losses[0.0] else 0.0
    return MixChoice(
        weight=weight,
        encoder_accuracy=accuracy[0.0],
        lexical_accuracy=_accuracy(lexical, labels),
        mix_accuracy=accuracy[weight],
        encoder_log_loss=losses[0.0],
        mix_log_loss=losses[weight],
    )


def _check_labels(labels: np.ndarray, probabilities: np.ndarray) -> None:
    """Raise unless there is one label per row, each a column of `probabilities`."""
    labels = np.asarray(labels)
    rows, classes = np.shape(probabilities)[:2] if np.ndim(probabilities) == 2 else (None, None)
    if rows is None or labels.shape != (rows,):
        raise LexicalShapeError(f"{labels.shape} labels for probabilities of shape {np.shape(probabilities)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise LexicalShapeError(f"labels must be class ids 0-{classes - 1}; got {labels.min()}-{labels.max()}")


def _log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(axis=1) == labels).mean())


@dataclass(frozen=True)
class Companion:
    """The fitted companion (with its chosen share) and the validation scores that chose it."""

    model: LexicalModel
    choice: MixChoice
    rows: int

    @property
    def features(self) -> int:
        return int(self.model.coef.shape[1])


def build_companion(
    train: tuple[list[str], np.ndarray],
    validation: tuple[list[str], np.ndarray],
    encoder_validation: np.ndarray,
    *,
    max_chars: int,
    seed: int,
) -> Companion:
    """Fit the companion on the final model's training texts and choose its share on the validation texts, given
    the encoder's validation probabilities (from the path it is served by)."""
    model = fit_lexical(*train, max_chars=max_chars, seed=seed, n_classes=encoder_validation.shape[1])
    texts, labels = validation
    choice = choose_weight(encoder_validation, model.probabilities(prepare_texts(texts, max_chars)), labels)
    log.info(
        "lexical companion: validation accuracy encoder %.4f, lexical %.4f, mix %.4f at share %.2f (%s)",
        choice.encoder_accuracy,
        choice.lexical_accuracy,
        choice.mix_accuracy,
        choice.weight,
        "served" if choice.kept else "not served: it did not win on validation",
    )
    return Companion(dataclasses.replace(model, weight=choice.weight), choice, len(train[0]))


def companion_metrics(
    labels: np.ndarray, probabilities: dict[str, np.ndarray], label_names: tuple[str, ...]
) -> dict[str, float]:
    """Accuracy, macro-F1, per-class F1 and ECE per model (`encoder`, `lexical`) on a labelled split (the served
    mix's are the split's own report)."""
    out: dict[str, float] = {}
    for name, probs in probabilities.items():
        check_probabilities(probs, name, len(label_names))
        _check_labels(labels, probs)
        predicted = probs.argmax(axis=1)
        scores = classification_metrics(labels, predicted, label_names)
        kept = ("accuracy", "macro_f1", *(k for k in scores if k.startswith("f1_")))
        out |= {f"{name}_{k}": scores[k] for k in kept}
        out[f"{name}_ece"] = expected_calibration_error(probs.max(axis=1), predicted == labels)
    return out


def companion_table(companion: Companion, test: dict[str, float], served: dict[str, float]) -> str:
    """The model card's comparison: encoder alone, companion alone and the served mix, on validation and test."""
    choice = companion.choice
    rows = [
        ("encoder alone", choice.encoder_accuracy, "encoder"),
        ("lexical companion alone", choice.lexical_accuracy, "lexical"),
    ]
    lines = [
        f"| {label} | {val:.4f} | {test[f'{key}_accuracy']:.4f} | {test[f'{key}_macro_f1']:.4f} | "
        f"{test[f'{key}_ece']:.4f} |"
        for label, val, key in rows
    ]
    lines.append(
        f"| served: {1 - choice.weight:.2f} x encoder + {choice.weight:.2f} x lexical | {choice.mix_accuracy:.4f} | "
        f"{served['accuracy']:.4f} | {served['macro_f1']:.4f} | {served['ece']:.4f} |"
    )
    return "\n".join(
        [
            f"TF-IDF word {WORD_NGRAMS[0]}-{WORD_NGRAMS[1]}-grams and character "
            f"{CHAR_NGRAMS[0]}-{CHAR_NGRAMS[1]}-grams ({companion.features:,} features) with a logistic regression, "
            f"trained on the same {companion.rows:,} rows; its share was chosen on the validation split (lowest log "
            "loss, no accuracy lost), never on test.",
            "",
            "| model | validation accuracy | test accuracy | test macro-F1 | test ECE |",
            "| --- | --- | --- | --- | --- |",
            *lines,
        ]
    )
