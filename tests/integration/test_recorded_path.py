"""Evaluation and promotion score each version on its recorded serving path: an operator's NEWSCAT_BACKEND (or
another override) exported in the shell changes neither the metrics nor the gate's decision, and the path scored is
recorded beside the metrics."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from newscat.registry.promotion import SERVING_DEFAULT_TAG, promote_with_gate
from newscat.registry.versions import version_model_id
from newscat.tracking.models import load_model, logged_tags
from tests.helpers import MODEL_NAME
from tests.integration.conftest import TrackedStudy

pytestmark = pytest.mark.integration
NAME = "newscat-paths"
OVERRIDES = ("NEWSCAT_BACKEND", "NEWSCAT_PRECISION", "NEWSCAT_DEVICE")


@pytest.fixture(scope="module")
def twins(tracked_study: TrackedStudy) -> MlflowClient:
    """Versions 1 and 2 of NAME: the tiny study's model (same weights, same data tags)."""
    client = MlflowClient(tracking_uri=tracked_study.tracking_uri)
    source = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    client.create_registered_model(NAME)
    for _ in range(2):
        client.create_model_version(NAME, source=source.source, run_id=source.run_id, tags=source.tags)
    return client


def _recorded_default(client: MlflowClient) -> str:
    model_id = version_model_id(client.get_model_version(NAME, "1"))
    return logged_tags(model_id).get(SERVING_DEFAULT_TAG, "torch/fp32")


def test_an_exported_override_changes_neither_metrics_nor_decision_and_the_path_is_recorded(
    tracked_study: TrackedStudy, twins: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from newscat.registry.evaluations import SCORED_ENGINE_TAG, SCORED_PATH_TAG, evaluate_uri, evaluation_data

    mlflow.set_tracking_uri(tracked_study.tracking_uri)
    for name in OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    default = _recorded_default(twins)
    uri = f"models:/{NAME}/1"
    cfg = evaluation_data(uri, None, text_columns=None, label_column=None)
    first = promote_with_gate(NAME, version="1")  # version 1 becomes champion: version 2 then faces it
    assert first.moved

    plain_metrics, plain_run = evaluate_uri(uri, cfg)
    plain = promote_with_gate(NAME, version="2", move=False).decision

    # The override the issue names (torch where the gate chose ONNX); where torch is the default, another one.
    override = ("NEWSCAT_BACKEND", "torch") if default.startswith("onnx/") else ("NEWSCAT_PRECISION", "int8")
    monkeypatch.setenv(*override)
    # It is in effect for a load that decides nothing (`newscat predict`): so the test can tell the paths apart.
    assert load_model(uri).unwrap_python_model().choice.path != default
    metrics, run_id = evaluate_uri(uri, cfg)
    result = promote_with_gate(NAME, version="2", move=False)
    decision = result.decision

    assert metrics == plain_metrics  # every metric, calibration (ece) included, to the last bit
    assert (decision.challenger_metrics, decision.champion_metrics) == (
        plain.challenger_metrics,
        plain.champion_metrics,
    )
    assert (decision.only_challenger_right, decision.only_champion_right, decision.p_value) == (
        plain.only_challenger_right,
        plain.only_champion_right,
        plain.p_value,
    )
    assert (decision.passed, decision.reason) == (plain.passed, plain.reason)
    assert decision.challenger_path == decision.champion_path == default

    for run in (plain_run, run_id):
        tags = twins.get_run(run).data.tags
        assert tags[SCORED_PATH_TAG] == default and "the recorded default" in tags[SCORED_ENGINE_TAG]
    gate_run = twins.get_run(result.run_id).data.tags
    assert gate_run["gate.challenger_path"] == gate_run["gate.champion_path"] == default
    assert gate_run[SCORED_PATH_TAG] == default
    # The LoggedModel's test metrics (the release's own keys) were made on the recorded path, whatever was exported.
    model_id = version_model_id(twins.get_model_version(NAME, "1"))
    logged = {m.key: m.value for m in mlflow.get_logged_model(model_id).metrics if m.run_id == run_id}
    assert logged["test_accuracy"] == pytest.approx(plain_metrics["accuracy"])
    assert logged["test_ece"] == pytest.approx(plain_metrics["ece"])
