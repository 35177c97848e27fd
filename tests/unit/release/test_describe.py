"""The release's metric names and its card say what they measure: the gate's agreement counts training texts too, so
it is neither named nor linked as a validation metric; the test scores are the served mix's, and the card says so.
The card and the tags are pure functions of the release context, and the stage's face imports lazily."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd

from newscat.config import Config
from newscat.data.load import NewsData
from newscat.evaluation.card import CardFacts, model_card
from newscat.evaluation.report import Predictions, report_metrics
from newscat.export.gate import GateDecision, PathScore
from newscat.release.context import ReleaseContext, Weights
from newscat.release.describe import gate_metrics, version_tags, write_card
from newscat.tracking.models import log_model_metrics

DECISION = GateDecision(
    scores=(
        PathScore("torch/fp32", 0.91, 1.0, 100.0, 8.0, 1.0, True),
        PathScore("onnx/int8", 0.905, 0.996, 300.0, 3.0, 2.9, True),
    ),
    default="onnx/int8",
    onnx=True,
)
VALIDATION = {"split": "validation", "digest": "v1", "source": "data"}


def test_only_validation_accuracy_is_a_validation_metric() -> None:
    validation, unlinked = gate_metrics(DECISION)
    assert validation == {"torch_fp32_accuracy": 0.91, "onnx_int8_accuracy": 0.905}
    assert unlinked["onnx_int8_agreement_validation_and_training_texts"] == 0.996
    assert not [key for key in unlinked if key.endswith("_agreement")]  # no bare name that reads as validation's
    assert unlinked["onnx_int8_texts_per_s"] == 300.0 and unlinked["onnx_int8_speedup"] == 2.9


def test_the_gate_metrics_are_linked_to_the_validation_set_only_where_they_are_validation_scores(
    tracking_uri: str,
) -> None:
    validation, unlinked = gate_metrics(DECISION)
    with mlflow.start_run():
        model_id = mlflow.initialize_logged_model(name="release-trial-0").model_id
        log_model_metrics(model_id, validation, VALIDATION)
        log_model_metrics(model_id, unlinked, None)
    linked = {m.key: m.dataset_name for m in mlflow.get_logged_model(model_id).metrics}
    assert linked["onnx_int8_accuracy"] == "validation"
    assert linked["onnx_int8_agreement_validation_and_training_texts"] is None
    assert linked["onnx_int8_one_item_ms"] is None


def _card(served: str) -> str:
    per_class = pd.DataFrame([{"class": "World", "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}])
    return model_card(
        CardFacts(
            registered_model="newscat",
            base_model="m",
            data_source="d",
            label_names=("World",),
            split_rows={"test": 2},
            digests={"test": "d1"},
            params={},
            study="s",
            trial=0,
            metrics={"accuracy": 1.0},
            per_class=per_class,
            max_length=64,
            lexical="| model | validation accuracy |",
            served=served,
        )
    )


def test_the_card_says_the_test_scores_are_the_served_mixs() -> None:
    served = "0.70 x the encoder on onnx/int8 + 0.30 x the lexical companion"
    card = _card(served)
    assert f"Scores of the served model ({served}) on the test split" in card
    assert f"The test scores above are the served\nmodel's: {served}." in card
    assert "default path's" not in card  # the old claim: the encoder's path alone


def _context() -> ReleaseContext:
    frame = pd.DataFrame({"text": ["Stocks rally", "Striker scores", "New chip", "Talks stall"], "label": [2, 1, 3, 0]})
    data = NewsData(frame, frame, frame, ("World", "Sports", "Business", "Sci/Tech"), "d", "ag_news")
    records = {"test": {"split": "test", "digest": "d3", "sha256": "abc", "rows": 4}}
    digests = {"train": "d1", "validation": "d2", "test": "d3"}
    final = Weights("m-final-weights", "r-refit", 4)
    recipe = {"learning_rate": "3e-05", "epochs": "2"}
    return ReleaseContext(Config(), data, records, digests, "s", 3, "r-trial", final, "r-study", recipe)


def _scored(ctx: ReleaseContext) -> Predictions:
    probabilities = np.eye(4)[[2, 1, 3, 1]] * 0.7 + 0.075
    test = ctx.data.test
    return Predictions(
        texts=test["text"].tolist(),
        labels=test["label"].to_numpy(),
        predicted=probabilities.argmax(axis=1),
        probabilities=probabilities,
        label_names=ctx.data.label_names,
        data=dict(ctx.records["test"]),
    )


def test_the_card_and_the_tags_are_pure_functions_of_the_context(broken: str) -> None:
    """With the tracking store answering 500 to everything, the card and the tags are still written, the same
    each time: they read the context, never MLflow (the recipe and the weights digest are handed in)."""
    ctx = _context()
    build = SimpleNamespace(
        decision=DECISION, gated=SimpleNamespace(onnx_error=None), scorer=SimpleNamespace(lexical=None)
    )
    predictions = _scored(ctx)
    metrics = report_metrics(predictions)
    card = write_card(ctx, predictions, metrics, build)  # type: ignore[arg-type]
    assert card == write_card(_context(), _scored(ctx), report_metrics(predictions), build)  # type: ignore[arg-type]
    assert "3e-05" in card and "trial 3" in card.lower()
    tags = version_tags(ctx, predictions, metrics, "sha-of-weights")
    assert tags == version_tags(_context(), predictions, metrics, "sha-of-weights")
    assert tags.weights_sha256 == "sha-of-weights" and tags.weights_run_id == "r-refit"
    assert tags.trial_run_id == "r-trial" and tags.evaluations == {"d3": "r-study"}


def test_importing_one_part_of_the_stage_imports_only_what_it_needs() -> None:
    code = (
        "import sys, newscat.release as r, newscat.release.describe\n"
        "assert 'newscat.release.publish' not in sys.modules, 'describe pulled in publish'\n"
        "assert r.resume_release.__module__ == 'newscat.release.publish'\n"
        "assert not [m for m in sys.modules if m.startswith(('newscat.training', 'newscat.monitoring'))]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
