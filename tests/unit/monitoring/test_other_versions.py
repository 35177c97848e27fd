"""`newscat monitor` says when other versions of the same registered name still answer (and trace) traffic: after
an alias moved, a running server keeps serving, and tracing, the version it loaded."""

from __future__ import annotations

import mlflow
import numpy as np

from newscat.config import MonitorConfig
from newscat.monitoring.monitor import monitor
from newscat.serving.tracing import TraceSettings
from newscat.tracking.models import log_reference
from tests.unit.monitoring.traffic import EXPERIMENT, NAME, reference, serve, start_tracer, traffic

CFG = MonitorConfig(experiment=EXPERIMENT, since="1h", min_texts=10)


def test_monitor_warns_when_another_version_of_the_name_still_has_recent_traces(champion: str) -> None:
    tracer = start_tracer(TraceSettings(experiment=EXPERIMENT, model_uri=f"models:/{NAME}@champion"))
    texts, probabilities = traffic(np.random.default_rng(3), 20, [0.25] * 4, 30)
    serve(tracer, texts, probabilities)  # 2 requests, answered by version 1
    mlflow.set_experiment(EXPERIMENT)  # where monitor logs its run (the fixture's "unit" experiment is elsewhere)
    assert not any("other versions" in note for note in monitor(f"{NAME}@champion", CFG).notes)

    # Version 2 is registered and takes the alias; the server started before still serves version 1.
    retrained = mlflow.initialize_logged_model(name="retrained")
    mlflow.finalize_logged_model(retrained.model_id, "READY")
    log_reference(retrained.model_id, reference(np.random.default_rng(5)), "1200 synthetic validation rows")
    version = mlflow.register_model(f"models:/{retrained.model_id}", NAME)
    mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", version.version)

    report = monitor(f"{NAME}@champion", CFG)
    assert report.version == "2" and len(report.window.answers) == 0
    said = f"other versions of {NAME} still answer traffic in this window (version 1: 2 traces)"
    assert any(note.startswith(said) for note in report.notes), report.notes
    assert said in report.text()
