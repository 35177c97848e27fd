"""The accuracy gate of the fast serving paths: each candidate (ONNX int8, ONNX fp32, torch bf16) is scored on the
test split beside torch fp32, and may become the model's default only if it agrees on at least 99.5% of the labels
and loses at most 0.3 points of accuracy. The fastest path that passes is the default."""

from __future__ import annotations

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
BATCH_SIZE = 64


@dataclass(frozen=True)
class PathScore:
    """One serving path on the test split."""

    path: str  # backend/precision
    accuracy: float
    agreement: float  # share of labels equal to torch fp32's
    texts_per_s: float
    passed: bool


@dataclass(frozen=True)
class GateDecision:
    """Every path's scores and the default: the fastest path that passed (torch fp32 if none did)."""

    scores: tuple[PathScore, ...]
    default: str
    onnx: bool

    def reference(self) -> PathScore:
        return next(s for s in self.scores if s.path == REFERENCE)

    def settings(self) -> dict[str, Any]:
        """The `serving` entry of the model's settings, which `newscat.serving.choice` reads at load time."""
        backend, precision = self.default.split("/")
        return {
            "onnx": self.onnx,
            "default": {"backend": backend, "precision": precision},
            "passed": [s.path for s in self.scores if s.passed],
            "gate": {"min_agreement": MIN_AGREEMENT, "max_accuracy_drop": MAX_ACCURACY_DROP},
        }

    def metrics(self) -> dict[str, float]:
        """Per path: test accuracy, agreement with torch fp32, and texts/s (batches of 64, this machine)."""
        out: dict[str, float] = {}
        for s in self.scores:
            key = s.path.replace("/", "_")
            out |= {f"{key}_accuracy": s.accuracy, f"{key}_agreement": s.agreement, f"{key}_texts_per_s": s.texts_per_s}
        return out

    def tags(self) -> dict[str, str]:
        return {
            "newscat.serving.default": self.default,
            "newscat.serving.passed": ",".join(s.path for s in self.scores if s.passed),
        }


def candidates(onnx: bool, native_bf16: bool) -> list[str]:
    """The paths to score, torch fp32 (the reference) first; bf16 only where this machine runs it natively."""
    paths = [REFERENCE]
    if onnx:
        paths += ["onnx/int8", "onnx/fp32"]
    if native_bf16:
        paths.append("torch/bf16")
    return paths


def run_gate(
    model_dir: Path, texts: list[str], labels: np.ndarray, paths: list[str], onnx: bool
) -> tuple[GateDecision, dict[str, np.ndarray]]:
    """Score each path on `texts` and decide; returns the decision and each path's probabilities."""
    import json

    settings = json.loads((model_dir / "newscat.json").read_text(encoding="utf-8"))
    encoder = TokenEncoder(model_dir, int(settings["max_length"]))
    probabilities: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for path in paths:
        backend, precision = path.split("/")
        engine = load_engine(model_dir, backend, precision, "cpu")
        started = time.perf_counter()
        probabilities[path], _ = class_probabilities(encoder, engine, texts, BATCH_SIZE)
        seconds[path] = time.perf_counter() - started
        log.info("accuracy gate: %s scored %d test texts in %.0f s", path, len(texts), seconds[path])
    decision = decide(probabilities, labels, seconds, onnx=onnx)
    log.info("accuracy gate: default serving path %s (passed: %s)", decision.default, decision.settings()["passed"])
    return decision, probabilities


def decide(
    probabilities: dict[str, np.ndarray], labels: np.ndarray, seconds: dict[str, float], *, onnx: bool
) -> GateDecision:
    """Each path against torch fp32: agreement >= 99.5% and accuracy drop <= 0.3 points; the fastest passing
    path is the default."""
    reference = probabilities[REFERENCE].argmax(axis=1)
    reference_accuracy = float((reference == labels).mean())
    scores = []
    for path, probs in probabilities.items():
        predicted = probs.argmax(axis=1)
        accuracy = float((predicted == labels).mean())
        agreement = float((predicted == reference).mean())
        passed = agreement >= MIN_AGREEMENT and reference_accuracy - accuracy <= MAX_ACCURACY_DROP + 1e-12
        scores.append(PathScore(path, accuracy, agreement, len(labels) / max(seconds[path], 1e-9), passed))
    default = max((s for s in scores if s.passed), key=lambda s: s.texts_per_s).path
    return GateDecision(tuple(scores), default, onnx)
