"""The serving build of the final model: its classifier folder plus ONNX graphs, each path scored by the accuracy
gate, and the gate's decision written into the model's settings for `newscat.serving.choice` to read."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from newscat.config import SERVING_PATHS
from newscat.export.gate import GateDecision, candidates, run_gate
from newscat.export.onnx import export_onnx
from newscat.serving.artifacts import SETTINGS_FILE, record_files
from newscat.serving.backends import load_engine
from newscat.serving.lexical import LexicalModel
from newscat.serving.model import class_probabilities
from newscat.serving.precision import native_bf16
from newscat.serving.tokens import TokenEncoder

log = logging.getLogger("newscat")


@dataclass(frozen=True)
class ServingBuild:
    """The gate's decision, the probabilities of its default path on the test texts, and what the export did."""

    decision: GateDecision
    probabilities: np.ndarray
    fused: dict[str, int]
    onnx_error: str | None


def build_serving(
    model_dir: Path, texts: list[str], labels: np.ndarray, wanted: tuple[str, ...] = SERVING_PATHS
) -> ServingBuild:
    """Add ONNX graphs to `model_dir` (a classifier folder) if an ONNX path is `wanted`, gate every wanted path on
    the test texts beside torch fp32, and record the decision in the model's settings.

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
    decision, probabilities = run_gate(model_dir, texts, labels, paths, onnx)
    _update_settings(model_dir, serving=decision.settings())
    return ServingBuild(decision, probabilities[decision.default], fused, error)


def path_probabilities(model_dir: Path, path: str, texts: list[str]) -> np.ndarray:
    """The encoder's class probabilities of `texts` on one serving path (`backend/precision`), on the CPU."""
    settings = json.loads((model_dir / SETTINGS_FILE).read_text(encoding="utf-8"))
    backend, precision = path.split("/")
    engine = load_engine(model_dir, backend, precision, "cpu")
    return class_probabilities(TokenEncoder(model_dir, int(settings["max_length"])), engine, texts)[0]


def add_lexical(model_dir: Path, model: LexicalModel) -> None:
    """Put the lexical companion's plain files into the model (SHA-256 checked at load) and its share into the
    settings, so that the served model mixes it in."""
    record_files(model_dir, model.save(model_dir))
    _update_settings(model_dir, lexical={"weight": model.weight, "features": int(model.coef.shape[1])})


def _update_settings(model_dir: Path, **entries: object) -> None:
    path = model_dir / SETTINGS_FILE
    settings = json.loads(path.read_text(encoding="utf-8"))
    settings.update(entries)
    path.write_text(json.dumps(settings, indent=2), encoding="utf-8")


def serving_table(build: ServingBuild) -> str:
    """The gate's figures as a markdown table (for the model card); speeds were measured on the logging machine."""
    rows = [
        f"| {s.path} | {s.accuracy:.4f} | {s.agreement:.4f} | {s.texts_per_s:.0f} | {s.one_item_ms:.1f} | "
        f"{s.speedup:.2f} | "
        f"{'yes' if s.passed else 'no'}{' (default)' if s.path == build.decision.default else ''} |"
        for s in build.decision.scores
    ]
    note = f"\nONNX export failed ({build.onnx_error}); torch serves this model.\n" if build.onnx_error else ""
    return (
        "\n".join(
            [
                "| path | test accuracy | agreement with torch fp32 | texts/s (batches of 64, at logging) | passed |",
                "| --- | --- | --- | --- | --- |",
                *rows,
            ]
        )
        + note
    )
