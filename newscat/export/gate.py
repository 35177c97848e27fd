"""The accuracy gate of the fast serving paths: each candidate (ONNX int8, ONNX fp32, torch bf16) is scored beside
torch fp32 and may become the model's default only if its labels agree with torch fp32's on at least 99.5% of the
texts and it loses at most 0.3 points of validation accuracy. The fastest path that passes is the default, speed
being the geometric mean of two ratios to torch fp32: texts/s over every scored text (a loaded server) and the
latency of one item (a quiet one).

The test split never takes part: accuracy is measured on the validation rows, and agreement, which needs no labels,
on the validation texts plus up to `AGREEMENT_TEXTS` training texts (those the final encoder did not see where any
are left). 500 validation rows resolve a 0.3-point accuracy step poorly (1.5 rows); agreement on thousands of
texts is the gate's real power: 99.5% allows 12 label changes in 2,500 texts."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from newscat.serving.backends import load_engine
from newscat.serving.model import class_probabilities
from newscat.serving.tokens import TokenEncoder

log = logging.getLogger("newscat")
MIN_AGREEMENT = 0.995
MAX_ACCURACY_DROP = 0.003
REFERENCE = "torch/fp32"
LATENCY_ITEMS = 100  # single-item predictions timed per path (their median)
AGREEMENT_TEXTS = 2000  # unlabelled training texts scored for agreement, besides the validation texts


@dataclass(frozen=True)
class GateTexts:
    """What the gate scores: labelled validation rows, and unlabelled texts that only count for agreement."""

    texts: list[str]  # validation
    labels: np.ndarray
    unlabeled: list[str]
    unlabeled_source: str  # which texts those are, for the record

    @property
    def all_texts(self) -> list[str]:
        return [*self.texts, *self.unlabeled]


@dataclass(frozen=True)
class PathScore:
    """One serving path: validation accuracy, agreement with torch fp32 on every scored text, speed."""

    path: str  # backend/precision
    accuracy: float  # on the validation rows
    agreement: float  # share of labels equal to torch fp32's, validation and unlabelled texts together
    texts_per_s: float
    one_item_ms: float
    speedup: float  # vs torch fp32: sqrt(throughput ratio x latency ratio)
    passed: bool


@dataclass(frozen=True)
class GateDecision:
    """Every path's scores and the default: the fastest path that passed (torch fp32 if none did)."""

    scores: tuple[PathScore, ...]
    default: str
    onnx: bool
    validation_rows: int = 0
    agreement_rows: int = 0  # validation and unlabelled texts
    unlabeled_source: str = ""

    @property
    def passed(self) -> list[str]:
        """The paths that passed, fastest first (the order `newscat.serving.choice` falls back in)."""
        return [s.path for s in sorted(self.scores, key=lambda s: -s.speedup) if s.passed]

    def settings(self) -> dict[str, Any]:
        """The `serving` entry of the model's settings, which `newscat.serving.choice` reads at load time."""
        backend, precision = self.default.split("/")
        return {
            "onnx": self.onnx,
            "default": {"backend": backend, "precision": precision},
            "passed": self.passed,
            "gate": {
                "min_agreement": MIN_AGREEMENT,
                "max_accuracy_drop": MAX_ACCURACY_DROP,
                "accuracy_on": f"validation ({self.validation_rows} rows)",
                "agreement_on": f"validation texts and {self.unlabeled_source} ({self.agreement_rows} texts)",
            },
        }

    def metrics(self) -> dict[str, float]:
        """Per path: validation accuracy, agreement with torch fp32, texts/s, one item's latency, speed."""
        out: dict[str, float] = {}
        for s in self.scores:
            key = s.path.replace("/", "_")
            out |= {
                f"{key}_accuracy": s.accuracy,
                f"{key}_agreement": s.agreement,
                f"{key}_texts_per_s": s.texts_per_s,
                f"{key}_one_item_ms": s.one_item_ms,
                f"{key}_speedup": s.speedup,
            }
        return out

    def tags(self) -> dict[str, str]:
        return {
            "newscat.serving.default": self.default,
            "newscat.serving.passed": ",".join(self.passed),
        }


def candidates(wanted: tuple[str, ...], onnx: bool, native_bf16: bool) -> list[str]:
    """The paths to score, torch fp32 (the reference) first: the wanted ones that can run here (ONNX only when the
    export worked, bf16 only where this machine runs it natively), as plain words: they are logged, recorded and
    compared as text."""
    runnable = [str(p) for p in wanted if (onnx or not p.startswith("onnx/")) and (native_bf16 or p != "torch/bf16")]
    return [REFERENCE, *runnable]


def run_gate(
    model_dir: Path, gate: GateTexts, paths: list[str], onnx: bool
) -> tuple[GateDecision, dict[str, np.ndarray]]:
    """Score each path on the gate's texts and decide; returns the decision and each path's probabilities of the
    validation texts."""
    import json

    settings = json.loads((model_dir / "newscat.json").read_text(encoding="utf-8"))
    encoder = TokenEncoder(model_dir, int(settings["max_length"]))
    texts = gate.all_texts
    probabilities: dict[str, np.ndarray] = {}
    timings: dict[str, Timing] = {}
    for path in paths:
        backend, precision = path.split("/")
        engine = load_engine(model_dir, backend, precision, "cpu")
        started = time.perf_counter()
        probabilities[path], _ = class_probabilities(encoder, engine, texts)
        seconds = time.perf_counter() - started
        timings[path] = Timing(len(texts) / max(seconds, 1e-9), _one_item_ms(encoder, engine, texts))
        log.info("accuracy gate: %s scored %d validation and unlabelled texts in %.0f s", path, len(texts), seconds)
    decision = decide(probabilities, gate.labels, timings, onnx=onnx)
    decision = dataclasses.replace(
        decision, agreement_rows=len(texts), unlabeled_source=gate.unlabeled_source, validation_rows=len(gate.texts)
    )
    log.info("accuracy gate: default serving path %s (passed: %s)", decision.default, decision.passed)
    return decision, {path: probs[: len(gate.texts)] for path, probs in probabilities.items()}


@dataclass(frozen=True)
class Timing:
    texts_per_s: float  # the whole split, length-sorted batches
    one_item_ms: float  # median of single-item predictions


def _one_item_ms(encoder: TokenEncoder, engine: object, texts: list[str]) -> float:
    """Median milliseconds to predict one item alone (after one warm-up)."""
    class_probabilities(encoder, engine, texts[:1])
    timings = []
    for text in texts[:LATENCY_ITEMS]:
        started = time.perf_counter()
        class_probabilities(encoder, engine, [text])
        timings.append(1000 * (time.perf_counter() - started))
    return float(np.median(timings))


def decide(
    probabilities: dict[str, np.ndarray], labels: np.ndarray, timings: dict[str, Timing], *, onnx: bool
) -> GateDecision:
    """Each path against torch fp32: agreement >= 99.5% (over every scored text) and validation accuracy drop
    <= 0.3 points (over the first `len(labels)` texts, the labelled ones); the fastest passing path is the default."""
    base = timings[REFERENCE]
    reference = probabilities[REFERENCE].argmax(axis=1)
    labelled = len(labels)
    reference_accuracy = float((reference[:labelled] == labels).mean())
    scores = []
    for path, probs in probabilities.items():
        predicted = probs.argmax(axis=1)
        accuracy = float((predicted[:labelled] == labels).mean())
        agreement = float((predicted == reference).mean())
        passed = agreement >= MIN_AGREEMENT and reference_accuracy - accuracy <= MAX_ACCURACY_DROP + 1e-12
        timing = timings[path]
        speedup = float(np.sqrt(timing.texts_per_s / base.texts_per_s * base.one_item_ms / timing.one_item_ms))
        scores.append(PathScore(path, accuracy, agreement, timing.texts_per_s, timing.one_item_ms, speedup, passed))
    default = max((s for s in scores if s.passed), key=lambda s: s.speedup).path
    return GateDecision(tuple(scores), default, onnx)
