"""The release's metric names and its card say what they measure: the gate's agreement counts training texts too, so
it is neither named nor linked as a validation metric; the test scores are the served mix's, and the card says so."""

from __future__ import annotations

import mlflow
import pandas as pd

from newscat.evaluation.card import CardFacts, model_card
from newscat.export.gate import GateDecision, PathScore
from newscat.tracking.models import log_model_metrics
from newscat.training.release import gate_metrics

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
