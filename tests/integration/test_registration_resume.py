"""`newscat tune --promote auto` killed (SIGKILL) right after the version is registered, before its description,
alias and gate: the rerun completes that version (never a second one) and still runs the gate."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from newscat.registry.tags import ALIASES_TAG
from newscat.tracking.models import DESCRIPTION_TAG
from tests.helpers import tiny_project

pytestmark = pytest.mark.integration
MODEL = "newscat-resumed"
# The real CLI, killed by itself with SIGKILL the moment newscat logs that the version is registered: a kill -9 at a
# named point between two registry requests, with no test branch in newscat's code.
KILLED_AFTER_REGISTER = """
import logging, os, signal, sys

class KillAfter(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("registered "):
            os.kill(os.getpid(), signal.SIGKILL)

logging.getLogger("newscat").addHandler(KillAfter())
from newscat.cli import main
main()
"""


def test_a_job_killed_after_registering_is_completed_and_gated_by_the_rerun(tmp_path: Path) -> None:
    project = tiny_project(tmp_path, n_train=4, n_test=2)
    flags = {"n_trials": 1, "max_epochs": 1, "no_refit": True, "study_name": "resumed", "experiment": "resumed"}
    flags |= {"serving_paths": "none", "lexical": "off"}  # the resume is the subject, not the release's paths
    args = project.tune_args(**flags, registered_model=MODEL, promote="auto")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_REGISTER, *args[1:]],
        cwd=tmp_path,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
    client = MlflowClient(tracking_uri=project.tracking_uri, registry_uri=project.tracking_uri)
    left = client.get_model_version(MODEL, "1")
    assert not left.description and not left.aliases  # what the kill left: a bare version

    rerun = subprocess.run(args, cwd=tmp_path, env=project.env(), capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "already registered as version 1" in rerun.stderr and "stopped before the gate" in rerun.stderr
    (found,) = client.search_model_versions(f"name='{MODEL}'")  # exactly one version
    version = client.get_model_version(MODEL, found.version)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(project.tracking_uri)
    try:
        card = mlflow.get_logged_model(version.source.removeprefix("models:/")).tags[DESCRIPTION_TAG]
    finally:
        mlflow.set_tracking_uri(previous)
    assert card.startswith("#") and version.description == card
    assert sorted(version.aliases) == ["challenger", "champion"]  # the gate ran: no champion yet, so it passed
    assert version.tags["moved_to.champion.reason"] == "promote=auto at the end of tuning"
    assert client.get_registered_model(MODEL).tags[ALIASES_TAG] == '{"challenger": "1", "champion": "1"}'
    promotions = client.get_experiment_by_name("newscat-promotions")
    (decision,) = client.search_runs([promotions.experiment_id])
    assert decision.data.tags["gate.challenger"] == "1" and decision.data.tags["gate.passed"] == "true"
