"""A real export of the embedded encoder (a fresh 4-class head): fused graph, int8 graph, the gate on real texts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from newscat.export.gate import GateTexts
from newscat.export.onnx import onnxruntime_at_debug
from newscat.export.package import ServingBuild, gate_serving_paths
from newscat.serving.artifacts import SETTINGS_FILE, verify_files
from tests.helpers import fresh_classifier, make_news


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_classifier(tmp_path_factory.mktemp("model") / "classifier")


def test_export_fuses_attention_quantizes_and_gates_every_path(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import onnx

    caplog.set_level(logging.INFO)

    news = make_news(10, seed=3)
    labels = np.array([label - 1 for label, _, _ in news])
    texts = [f"{title} {text}" for _, title, text in news]
    build = gate_serving_paths(model_dir, GateTexts(texts[:20], labels[:20], texts[20:], "training texts"))
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
    assert build.validation.shape == (20, 4) and np.allclose(build.validation.sum(axis=1), 1.0)
    assert build.decision.validation_rows == 20 and build.decision.agreement_rows == len(texts)
    chatter = [r.getMessage() for r in caplog.records if "onnxruntime" in r.pathname or "onnxruntime" in r.name]
    assert not chatter, chatter[:3]  # the job's output is newscat's own lines


def test_onnxruntime_records_are_demoted_to_debug_inside_the_export(caplog: pytest.LogCaptureFixture) -> None:
    ort = logging.getLogger("onnxruntime.quantization.onnx_quantizer")
    caplog.set_level(logging.INFO)
    with onnxruntime_at_debug():
        logging.info("root line from onnxruntime")  # pathname is this file: kept, as newscat's own would be
        ort.warning("please consider pre-processing")
    ort.warning("outside the export")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "root line from onnxruntime"),
        ("WARNING", "outside the export"),
    ]
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    with onnxruntime_at_debug():
        ort.warning("please consider pre-processing")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("DEBUG", "please consider pre-processing")]


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
    from newscat.export.pyfunc import save_pyfunc
    from newscat.release.companion import fit_lexical
    from newscat.serving.lexical import prepare_texts

    news = make_news(12, seed=5)
    texts, labels = [f"{title} {text}" for _, title, text in news], np.array([label - 1 for label, _, _ in news])
    directory = Path(shutil.copytree(model_dir, tmp_path / "classifier"))
    gate_serving_paths(directory, GateTexts(texts, labels, [], "no texts"), ("onnx/fp32",))
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


def test_each_text_gets_one_answer_whatever_its_batch_mates(model_dir: Path) -> None:
    """Alone, in a batch of other texts (longer ones: more padding) or repeated: the same probabilities within 1e-5
    on every path the gate can choose. Dynamic int8 quantizes activations per pass, so its engine takes one text
    per pass; run in a shared batch it would not keep the bound (checked, so this test can fail)."""
    from newscat.serving.backends import load_engine
    from newscat.serving.model import Scorer, class_probabilities
    from newscat.serving.tokens import TokenEncoder

    news = make_news(6, seed=11)
    others = [f"{title} {text} " * (1 + i % 3) for i, (_, title, text) in enumerate(news)]
    text = "Stocks rally as oil prices fall"
    for backend, precision in (("onnx", "int8"), ("onnx", "fp32"), ("torch", "fp32")):
        scorer = Scorer(model_dir, env={"NEWSCAT_BACKEND": backend, "NEWSCAT_PRECISION": precision})
        alone = scorer.probabilities([text])[0]
        for batch in ([text, *others], [*others[:7], text, *others[7:]], [text] * 5):
            got = scorer.probabilities(batch)[batch.index(text)]
            assert np.abs(got - alone).max() <= 1e-5, (backend, precision)
    engine = load_engine(model_dir, "onnx", "int8", "cpu")
    assert engine.per_text
    engine.per_text = False  # what today's merged batches did
    encoder = TokenEncoder(model_dir, 64)
    shared = class_probabilities(encoder, engine, [text, *others])[0][0]
    assert np.abs(shared - class_probabilities(encoder, engine, [text])[0][0]).max() > 1e-5


def test_the_build_answers_as_the_served_model_on_its_recorded_default(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ServingBuild` (what the release reports) and the pyfunc loaded with no override (what users get) serve the
    recorded default path and give the same probabilities, whatever NEWSCAT_* the builder's shell held."""
    import shutil

    import mlflow
    import pandas as pd

    from newscat.export.pyfunc import save_pyfunc

    news = make_news(8, seed=7)
    texts, labels = [f"{title} {text}" for _, title, text in news], np.array([label - 1 for label, _, _ in news])
    directory = Path(shutil.copytree(model_dir, tmp_path / "classifier"))
    monkeypatch.setenv("NEWSCAT_BACKEND", "torch")  # the builder's own serving preference: ignored by the build
    gated = gate_serving_paths(directory, GateTexts(texts, labels, [], "no texts"))
    build = ServingBuild.load(directory, gated)
    assert build.scorer.choice.path == gated.decision.default
    monkeypatch.delenv("NEWSCAT_BACKEND")
    model = mlflow.pyfunc.load_model(str(save_pyfunc(directory, tmp_path / "pyfunc", backend="onnx")))
    served = model.predict(pd.DataFrame({"text": texts}))
    names = list(served["probabilities"][0])
    got = np.array([[row[n] for n in names] for row in served["probabilities"]])
    assert got == pytest.approx(build.probabilities(texts), abs=1e-6)
