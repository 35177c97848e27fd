"""The serving build of the final model: its classifier folder plus ONNX graphs, each path scored by the accuracy
gate (on validation and unlabelled texts, never the test split), the gate's decision written into the model's
settings for `newscat.serving.choice` to read, and a `ServingBuild` that answers exactly as the served model will."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from newscat.export.gate import GateDecision, GateTexts, candidates, run_gate
from newscat.export.onnx import export_onnx
from newscat.names import FAST_PATHS
from newscat.serving.artifacts import read_settings, record_files, update_settings
from newscat.serving.backends import load_engine
from newscat.serving.lexical import LexicalModel
from newscat.serving.model import Scorer, Scores, class_probabilities
from newscat.serving.precision import native_bf16
from newscat.serving.tokens import TokenEncoder

log = logging.getLogger("newscat")


@dataclass(frozen=True)
class GatedPaths:
    """What the export and the gate did to a classifier folder: the decision (recorded in its settings), the
    encoder's validation probabilities on the default path, and the export's fused operators or failure."""

    decision: GateDecision
    validation: np.ndarray
    fused: dict[str, int]
    onnx_error: str | None


def gate_serving_paths(model_dir: Path, gate: GateTexts, wanted: tuple[str, ...] = FAST_PATHS) -> GatedPaths:
    """Add ONNX graphs to `model_dir` (a classifier folder) if an ONNX path is `wanted`, gate every wanted path
    beside torch fp32 on `gate`, and record the decision in the model's settings.

    A model whose architecture torch.onnx or ONNX Runtime cannot handle is served by torch: the reason is kept.
    """
    fused: dict[str, int] = {}
    error = None
    if any(p.startswith("onnx/") for p in wanted):
        try:
            export = export_onnx(model_dir)
            record_files(model_dir, sorted(export.files.values()))
            fused = export.fused
        except Exception as exc:  # any exporter failure: serve with torch, say why
            error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("ONNX export failed, the model is served by torch: %s", error)
    onnx = error is None and any(p.startswith("onnx/") for p in wanted)
    paths = candidates(wanted, onnx, native_bf16())
    decision, probabilities = run_gate(model_dir, gate, paths, onnx)
    update_settings(model_dir, serving=decision.settings())
    return GatedPaths(decision, probabilities[decision.default], fused, error)


@dataclass(frozen=True)
class ServingBuild:
    """The release's model folder as it will serve: the gate's decision and a `Scorer` loaded exactly as the served
    model loads (its recorded default path, no NEWSCAT_* override). Whatever the release reports (test metrics,
    card) comes from `scores`, the same code the served pyfunc runs."""

    model_dir: Path
    gated: GatedPaths
    scorer: Scorer

    @classmethod
    def load(cls, model_dir: Path, gated: GatedPaths) -> ServingBuild:
        scorer = Scorer(model_dir, env={})
        if scorer.choice.path != gated.decision.default:  # this machine gated the path, so it can run it
            raise RuntimeError(f"the build serves {scorer.choice.path}, the gate chose {gated.decision.default}")
        return cls(model_dir, gated, scorer)

    @property
    def decision(self) -> GateDecision:
        return self.gated.decision

    def scores(self, texts: list[str]) -> Scores:
        """What the served model answers to `texts`, and the encoder's and companion's parts."""
        return self.scorer.scores(texts)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """What the served model answers to `texts`: texts x classes."""
        return self.scorer.probabilities(texts)


def path_probabilities(model_dir: Path, path: str, texts: list[str]) -> np.ndarray:
    """The encoder's class probabilities of `texts` on one serving path (`backend/precision`), on the CPU."""
    backend, precision = path.split("/")
    engine = load_engine(model_dir, backend, precision, "cpu")
    encoder = TokenEncoder(model_dir, int(read_settings(model_dir)["max_length"]))
    return class_probabilities(encoder, engine, texts)[0]


def add_lexical(model_dir: Path, model: LexicalModel) -> None:
    """Put the lexical companion's plain files into the model (SHA-256 checked at load) and its share into the
    settings, so that the served model mixes it in."""
    record_files(model_dir, model.save(model_dir))
    update_settings(model_dir, lexical={"weight": model.weight, "features": int(model.coef.shape[1])})


def serving_table(decision: GateDecision, onnx_error: str | None = None) -> str:
    """The gate's figures as a markdown table (for the model card); speeds were measured on the logging machine."""
    rows = [
        f"| {s.path} | {s.accuracy:.4f} | {s.agreement:.4f} | {s.texts_per_s:.0f} | {s.one_item_ms:.1f} | "
        f"{s.speedup:.2f} | {'yes' if s.passed else 'no'}{' (default)' if s.path == decision.default else ''} |"
        for s in decision.scores
    ]
    note = f"\nONNX export failed ({onnx_error}); torch serves this model.\n" if onnx_error else ""
    source = (
        f"\nAccuracy on {decision.validation_rows} validation rows; agreement on {decision.agreement_rows} texts "
        f"(validation texts and {decision.unlabeled_source}). The test split chose nothing.\n"
    )
    header = (
        "| path | validation accuracy | agreement with torch fp32 | texts/s (at logging) | one item (ms) | speed-up "
        "| passed |"
    )
    return "\n".join([header, "| --- | --- | --- | --- | --- | --- | --- |", *rows]) + source + note
