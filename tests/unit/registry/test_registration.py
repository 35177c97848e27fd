"""Registration is resumable: a process killed (SIGKILL) right after each step of `register_version` leaves a
version that the main job's resume (`newscat.release.resume_release`) completes, and never a second one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from newscat.registry import versions
from newscat.registry.tags import VersionTags
from newscat.release import resume_release
from newscat.tracking.models import log_model_card
from tests.helpers import tool_env

CARD = "# newscat m\nAccuracy 0.9 on the test split"
# The child registers as the main job does, and kills itself with SIGKILL the moment newscat logs step `argv[3]`:
# a real kill -9 between two registry requests, at a named point, with no test branch in newscat's code.
CHILD = """
import json, logging, os, signal, sys
import mlflow
from newscat.registry.tags import VersionTags
from newscat.registry.versions import register_version

uri, model_id, step, tags = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])

class KillAfter(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith(step):
            os.kill(os.getpid(), signal.SIGKILL)

logger = logging.getLogger("newscat")
logger.setLevel(logging.INFO)
logger.addHandler(KillAfter())
mlflow.set_tracking_uri(uri)
register_version(f"models:/{model_id}", "m", tags=VersionTags(**tags), description=sys.argv[5])
"""


def _release_model(tmp_path: Path) -> tuple[str, str]:
    """A READY LoggedModel with its card as description, as `release_best` leaves it before registering; returns
    (model id, the run id a trial would have)."""
    experiment = mlflow.create_experiment("release", artifact_location=str(tmp_path / "artifacts"))
    with mlflow.start_run(experiment_id=experiment) as run:
        model = mlflow.initialize_logged_model(name="release-trial-0", source_run_id=run.info.run_id)
        mlflow.finalize_logged_model(model.model_id, "READY")
        log_model_card(model.model_id, CARD)
    return model.model_id, run.info.run_id


@pytest.mark.parametrize("step", ["registered", "described", "pointed", None], ids=str)
def test_a_kill_after_any_registration_step_is_completed_by_the_resume(
    tracking_uri: str, tmp_path: Path, step: str | None
) -> None:
    model_id, trial_run_id = _release_model(tmp_path)
    tags = {"study": "s", "trial": 0, "trial_run_id": trial_run_id, "data_source": "/data", "seed": 42}
    expected_tags = VersionTags(**tags).to_tags()
    command = [sys.executable, "-c", CHILD, tracking_uri, model_id, step or "-", json.dumps(tags), CARD]
    child = subprocess.run(command, env=tool_env(tracking_uri), capture_output=True, text=True, timeout=300)
    client = MlflowClient()
    if step is None:
        assert child.returncode == 0, child.stderr[-3000:]
    else:
        assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
        left = client.get_model_version("m", "1")
        assert (left.description or "") == ("" if step == "registered" else CARD)
        assert ("challenger" in left.aliases) == (step == "pointed")

    release = resume_release(registered_model="m", trial_run_id=trial_run_id)

    (found,) = client.search_model_versions("name='m'")  # exactly one version
    version = client.get_model_version("m", found.version)  # with its aliases (a search leaves them out)
    assert release is not None and release.predictions is None and str(release.version.version) == "1"
    assert version.description == CARD and version.aliases == ["challenger"]
    assert {k: version.tags.get(k) for k in expected_tags} == expected_tags
    model = client.get_registered_model("m")
    assert versions.recorded_aliases(model) == {"challenger": "1"}  # `newscat audit` sees newscat's own move
    linked = json.loads(mlflow.get_logged_model(model_id).tags[versions.MODEL_VERSIONS_TAG])
    assert linked == [{"name": "m", "version": 1}]
    # A second resume finds it complete and changes nothing.
    again = resume_release(registered_model="m", trial_run_id=trial_run_id)
    assert again.version.last_updated_timestamp == version.last_updated_timestamp


def test_a_resume_does_not_take_the_alias_back_from_a_newer_version(tracking_uri: str, tmp_path: Path) -> None:
    client = MlflowClient()
    client.create_registered_model("m")
    old = client.create_model_version("m", source=str(tmp_path / "a"))
    new = client.create_model_version("m", source=str(tmp_path / "b"))
    versions.set_alias(client, "m", "challenger", str(new.version))
    done = versions.finish_registration(old, description="card", alias="challenger")
    assert done.description == "card" and done.aliases == []
    assert str(versions.alias_version("m", "challenger").version) == str(new.version)


def test_a_resumed_job_knows_whether_its_versions_gate_ended(tracking_uri: str, tmp_path: Path) -> None:
    from newscat.registry.gate import GateDecision
    from newscat.registry.promotion import PROMOTIONS_EXPERIMENT, earlier_gate, log_gate_decision
    from newscat.tracking.runs import start_evaluation_run

    client = MlflowClient()
    client.create_registered_model("m")
    for _ in range(3):
        client.create_model_version("m", source=str(tmp_path / "model"))
    assert earlier_gate("m", "1") is None  # registered, then killed before the gate: it must still run
    versions.move_alias("m", "champion", "1", reason="gate passed")
    assert earlier_gate("m", "1") == "moved"
    for number, passed in (("2", False), ("3", True)):  # 3: a pass recorded, then killed before the move
        decision = GateDecision(number, "1", "accuracy", 0.0, 0.05, {"accuracy": 0.9}, passed=passed, reason="r")
        with start_evaluation_run(f"models:/m/{number}", experiment=PROMOTIONS_EXPERIMENT):
            log_gate_decision(decision, forced=False)
            mlflow.set_tags({"gate.registered_model": "m", "gate.to_alias": "champion"})
    assert earlier_gate("m", "2") == "refused" and earlier_gate("m", "3") is None
    assert earlier_gate("m", "2", to_alias="staging") is None  # a decision about another alias does not count
