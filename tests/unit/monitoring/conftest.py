"""The registered model the monitoring tests serve: a LoggedModel with a training reference, alias champion."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from newscat.tracking.models import log_reference
from tests.unit.monitoring.traffic import NAME, reference


@pytest.fixture
def champion(tracking_uri: str) -> str:
    """A LoggedModel with a training reference, registered as `news` version 1 with alias champion."""
    rng = np.random.default_rng(0)
    model = mlflow.initialize_logged_model(name="release")
    mlflow.finalize_logged_model(model.model_id, "READY")
    log_reference(model.model_id, reference(rng), "1200 synthetic validation rows")
    version = mlflow.register_model(f"models:/{model.model_id}", NAME)
    mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", version.version)
    mlflow.MlflowClient().set_model_version_tag(NAME, version.version, "test_accuracy", "0.9000")
    return model.model_id
