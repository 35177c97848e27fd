"""The release's choices (the served path, the companion's share) come from validation and training texts only:
the test split measures the chosen model and nothing else."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from newscat.config import Config, DataConfig, ModelConfig
from newscat.data.load import load_news
from newscat.release.build import build_release, gate_texts, training_reference
from newscat.release.context import ReleaseContext, Weights
from newscat.release.verify import score_test
from newscat.serving.artifacts import read_settings
from tests.helpers import fresh_classifier, write_ag_news_dir


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_classifier(tmp_path_factory.mktemp("model") / "classifier")


def _context(source: Path, test_labels: np.ndarray | None = None, *, rows: int | None = None) -> ReleaseContext:
    """A release of final weights trained on `rows` rows (default: the trials' training rows)."""
    cfg = Config(
        data=DataConfig(source=str(source), max_train_samples=60),
        model=ModelConfig(max_length=64, serving_paths=("onnx/int8",)),
    )
    data = load_news(cfg.data, seed=cfg.seed)
    if test_labels is not None:
        data = dataclasses.replace(data, test=data.test.assign(label=test_labels))
    final = Weights("m-none", "r-none", len(data.train) if rows is None else rows)
    records = {"test": {"digest": "t"}}
    return ReleaseContext(cfg, data, records, {"test": "t"}, "s", 0, "r-trial", final, "r-study", recipe={})


def test_random_test_labels_change_no_choice_of_the_release(classifier: Path, tmp_path: Path) -> None:
    source = write_ag_news_dir(tmp_path / "ag_news", n_train=40, n_test=10)
    true = _context(source)
    rng = np.random.default_rng(0)
    shuffled = _context(source, rng.integers(0, 4, len(true.data.test)))
    assert (shuffled.data.test["label"] != true.data.test["label"]).any()
    results = []
    for ctx, name in ((true, "true"), (shuffled, "random")):
        model_dir = Path(shutil.copytree(classifier, tmp_path / name))
        built = build_release(ctx, model_dir)
        build, companion = built.build, built.companion
        assert companion is not None
        settings = read_settings(model_dir)
        results.append((build.decision.default, build.decision.passed, companion.choice.weight, settings["serving"]))
        test = score_test(ctx, built)  # the test split is scored, on the chosen model, afterwards
        assert np.allclose(test.predictions.probabilities.sum(axis=1), 1.0)
        reference = training_reference(ctx, built)  # on the gate's texts, chosen once
        assert reference.frame.shape[0] == len(built.gate.texts) + len(built.gate.unlabeled)
    assert results[0][:3] == results[1][:3]
    assert results[0][3]["default"] == results[1][3]["default"] and results[0][3]["gate"] == results[1][3]["gate"]


def test_the_gate_agrees_on_training_texts_the_final_encoder_did_not_see(tmp_path: Path) -> None:
    source = write_ag_news_dir(tmp_path / "ag_news", n_train=40, n_test=10)
    data = _context(source).data
    trials_only = gate_texts(_context(source))
    assert trials_only.unlabeled_source == "training texts the final encoder did not see"
    assert not set(trials_only.unlabeled) & set(data.train["text"])
    assert trials_only.texts == data.validation["text"].tolist()
    everything = gate_texts(_context(source, rows=len(data.train_pool)))  # a refit on every row
    assert everything.unlabeled_source == "training texts" and set(everything.unlabeled) <= set(data.train_pool["text"])
