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
from newscat.serving.artifacts import read_settings
from newscat.training.inputs import StudyInputs
from newscat.training.refit import FinalWeights
from newscat.training.release import build_release, gate_texts, score_test
from tests.helpers import fresh_classifier, write_ag_news_dir


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_classifier(tmp_path_factory.mktemp("model") / "classifier")


def _inputs(source: Path, test_labels: np.ndarray | None = None) -> StudyInputs:
    cfg = Config(
        data=DataConfig(source=str(source), max_train_samples=60),
        model=ModelConfig(max_length=64, serving_paths=("onnx/int8",)),
    )
    data = load_news(cfg.data, seed=cfg.seed)
    if test_labels is not None:
        data = dataclasses.replace(data, test=data.test.assign(label=test_labels))
    return StudyInputs(cfg, data, None, None, None, None, records={"test": {"digest": "t"}})  # type: ignore[arg-type]


def test_random_test_labels_change_no_choice_of_the_release(classifier: Path, tmp_path: Path) -> None:
    source = write_ag_news_dir(tmp_path / "ag_news", n_train=40, n_test=10)
    true = _inputs(source)
    rng = np.random.default_rng(0)
    shuffled = _inputs(source, rng.integers(0, 4, len(true.data.test)))
    assert (shuffled.data.test["label"] != true.data.test["label"]).any()
    final = FinalWeights("m-none", "r-none", len(true.data.train))
    results = []
    for inputs, name in ((true, "true"), (shuffled, "random")):
        model_dir = Path(shutil.copytree(classifier, tmp_path / name))
        build, companion = build_release(inputs, model_dir, final)
        settings = read_settings(model_dir)
        results.append((build.decision.default, build.decision.passed, companion.choice.weight, settings["serving"]))
        test = score_test(inputs, build, companion)  # the test split is scored, on the chosen model, afterwards
        assert np.allclose(test.predictions.probabilities.sum(axis=1), 1.0)
    assert results[0][:3] == results[1][:3]
    assert results[0][3]["default"] == results[1][3]["default"] and results[0][3]["gate"] == results[1][3]["gate"]


def test_the_gate_agrees_on_training_texts_the_final_encoder_did_not_see(tmp_path: Path) -> None:
    inputs = _inputs(write_ag_news_dir(tmp_path / "ag_news", n_train=40, n_test=10))
    data = inputs.data
    trials_only = gate_texts(inputs, FinalWeights("m", "r", len(data.train)))
    assert trials_only.unlabeled_source == "training texts the final encoder did not see"
    assert not set(trials_only.unlabeled) & set(data.train["text"])
    assert trials_only.texts == data.validation["text"].tolist()
    everything = gate_texts(inputs, FinalWeights("m", "r", len(data.train_pool)))  # a refit on every row
    assert everything.unlabeled_source == "training texts" and set(everything.unlabeled) <= set(data.train_pool["text"])
