"""In-process loads of a logged model: those that decide or record metrics score on the model's recorded serving path
whatever NEWSCAT_* overrides the environment holds; none of them traces (only `mlflow models serve` does); the logged
files record their own LoggedModel, inside the checked settings, and the trace writer links and tags by it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from newscat.export.pyfunc import classifier_copy
from newscat.serving import tracing
from newscat.serving.artifacts import SETTINGS_FILE, CorruptModelError, verify_files
from newscat.serving.model import LOGGED_MODEL_KEY
from newscat.serving.trace_writer import served_model
from newscat.serving.tracing import MODEL_ID_METADATA, REGISTERED_MODEL_TAG, REGISTERED_VERSION_TAG
from newscat.tracking.models import download_model, load_model, load_recorded, scored_path

TEXTS = ["Striker scores twice as Arsenal win the cup", "Oil prices fall as stocks rally"]
OVERRIDES = ("NEWSCAT_BACKEND", "NEWSCAT_PRECISION", "NEWSCAT_DEVICE")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers import fresh_classifier

    return fresh_classifier(tmp_path_factory.mktemp("model") / "classifier", max_length=16)


@pytest.fixture
def logged(classifier: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A LoggedModel of the classifier (recorded default: torch fp32) in a fresh store, no NEWSCAT_* switch set."""
    from newscat.tracking.models import log_classifier_model

    for name in (*OVERRIDES, tracing.TRACING_ENV, tracing.SCORING_SERVER_ENV, tracing.MODEL_URI_ENV):
        monkeypatch.delenv(name, raising=False)
    with mlflow.start_run():
        return log_classifier_model(classifier, name="tiny", step=0, params={}, tags={})


def _probabilities(model: object) -> np.ndarray:
    answer = model.predict(pd.DataFrame({"text": TEXTS}))
    return np.array([[row[k] for k in sorted(row)] for row in answer["probabilities"]])


def test_a_recorded_load_scores_the_recorded_path_whatever_the_environment_says(
    logged: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"models:/{logged}"
    plain = _probabilities(load_model(uri))

    monkeypatch.setenv("NEWSCAT_PRECISION", "int8")
    overridden = load_model(uri)  # `newscat predict` honours an operator's override
    assert overridden.unwrap_python_model().choice.path == "torch/int8"
    recorded = load_recorded(uri)
    assert recorded.unwrap_python_model().choice.path == "torch/fp32"
    assert np.array_equal(_probabilities(recorded), plain)
    assert scored_path(recorded) == {
        "scored_path": "torch/fp32",
        "scored_engine": "torch fp32 on cpu: the recorded default torch/fp32",
    }
    assert scored_path(overridden)["scored_engine"].startswith("torch int8 on cpu: override NEWSCAT_PRECISION=int8")

    # The environment is not even read: switches that would fail a load (no ONNX files; a bad value) do nothing.
    monkeypatch.setenv("NEWSCAT_BACKEND", "onnx")
    monkeypatch.setenv("NEWSCAT_DEVICE", "gpu-please")
    with pytest.raises(mlflow.exceptions.MlflowException, match="NEWSCAT_DEVICE"):
        load_model(uri)
    assert np.array_equal(_probabilities(load_recorded(uri)), plain)


def test_no_in_process_load_traces_even_with_tracing_on(logged: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from newscat.batch.files import predict_texts

    monkeypatch.setenv(tracing.TRACING_ENV, "on")
    monkeypatch.setenv(tracing.EXPERIMENT_ENV, "served")
    uri = f"models:/{logged}"
    for load in (mlflow.pyfunc.load_model, load_model, load_recorded):
        model = load(uri)
        assert model.unwrap_python_model()._tracer is None
        assert "prediction_id" not in model.predict(pd.DataFrame({"text": TEXTS})).columns
    out = io.StringIO()
    assert predict_texts(uri, TEXTS, batch_size=8, out=out) == 2  # `newscat predict`
    assert "prediction_id" not in out.getvalue()
    assert mlflow.get_experiment_by_name("served") is None  # no trace writer ever reached the store
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    assert mlflow.search_traces(locations=experiments, return_type="list") == []
    # Only MLflow's scoring server traces: its processes carry the variable it loads the model from.
    assert not tracing.in_scoring_server({}) and tracing.in_scoring_server({tracing.SCORING_SERVER_ENV: "/m"})


def test_the_scoring_server_variable_is_the_one_mlflow_sets() -> None:
    from mlflow.pyfunc.scoring_server import _SERVER_MODEL_PATH

    assert tracing.SCORING_SERVER_ENV == _SERVER_MODEL_PATH


def test_the_logged_model_records_its_own_id_inside_its_checked_settings(logged: str, tmp_path: Path) -> None:
    folder = classifier_copy(download_model(f"models:/{logged}", tmp_path / "copy"))
    settings = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
    assert settings[LOGGED_MODEL_KEY] == logged
    verify_files(folder, settings)  # the id is part of the digest-checked settings
    settings[LOGGED_MODEL_KEY] = "m-someone-else"
    (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
    with pytest.raises(CorruptModelError, match="edited after it was logged"):
        verify_files(folder, settings)


def test_traces_link_to_the_served_model_and_name_its_version_after_the_alias_moved(tracking_uri: str) -> None:
    client = mlflow.MlflowClient()
    served, newer, unregistered = (mlflow.create_external_model(name=n).model_id for n in ("v1", "v2", "x"))
    mlflow.register_model(f"models:/{served}", "news")
    mlflow.register_model(f"models:/{newer}", "news")
    client.set_registered_model_alias("news", "champion", "2")  # the alias moved; the server still serves v1

    expected = {REGISTERED_MODEL_TAG: "news", REGISTERED_VERSION_TAG: "1", MODEL_ID_METADATA: served}
    assert served_model(client, None, served) == expected  # no NEWSCAT_TRACE_MODEL_URI needed
    assert served_model(client, "models:/news@champion", served) == expected  # the files served win over the alias
    # A model logged before newscat recorded its id: the URI, resolved as before.
    assert served_model(client, "models:/news@champion", None) == {
        REGISTERED_MODEL_TAG: "news",
        REGISTERED_VERSION_TAG: "2",
        MODEL_ID_METADATA: newer,
    }
    assert served_model(client, None, unregistered) == {MODEL_ID_METADATA: unregistered}
    assert served_model(client, None, None) == {}
    # A version made with create_model_version (which does not tag the LoggedModel) is found by its source.
    client.create_registered_model("other")
    client.create_model_version("other", source=f"models:/{unregistered}")
    assert served_model(client, None, unregistered)[REGISTERED_VERSION_TAG] == "1"
