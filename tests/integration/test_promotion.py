"""The gate, forced moves and rollback through the CLI, on real versions scored on real data."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from newscat.registry import tags
from newscat.registry import versions as registry
from tests.helpers import MODEL_NAME, tool_env
from tests.integration.conftest import TrackedStudy

pytestmark = pytest.mark.integration
GATED = "newscat-gate"


def _newscat(tracked_study: TrackedStudy, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["newscat", *args], env=tool_env(tracked_study.tracking_uri), capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def gated(tracked_study: TrackedStudy) -> MlflowClient:
    """A registered model whose versions 1 and 2 are the tiny study's model (same weights, same data tags)."""
    client = MlflowClient(tracking_uri=tracked_study.tracking_uri)
    source = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    client.create_registered_model(GATED)
    for _ in range(2):
        client.create_model_version(GATED, source=source.source, run_id=source.run_id, tags=source.tags)
    return client


def test_gate_refuses_a_tie_force_is_recorded_and_rollback_restores(
    tracked_study: TrackedStudy, gated: MlflowClient
) -> None:
    first = _newscat(tracked_study, "promote", GATED, "--version", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "no champion yet" in first.stdout and f"{GATED}@champion -> version 1" in first.stdout

    tie = _newscat(tracked_study, "promote", GATED, "--version", "2", "--margin", "0.0")
    assert tie.returncode == 1
    assert "REFUSED" in tie.stdout and "not above the margin" in tie.stdout
    assert "McNemar exact: only challenger right 0, only champion right 0" in tie.stdout
    assert "use --force" in tie.stderr
    assert str(gated.get_model_version_by_alias(GATED, "champion").version) == "1"

    forced = _newscat(tracked_study, "promote", GATED, "--version", "2", "--force", "--reason", "drill")
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert "FORCED past the gate" in forced.stdout
    v2 = gated.get_model_version(GATED, "2").tags
    assert v2["moved_to.champion.forced"] == "true" and "drill" in v2["moved_to.champion.reason"]
    evidence = gated.get_run(v2["moved_to.champion.evidence"])
    assert evidence.data.tags["gate.passed"] == "false" and evidence.data.tags["gate.forced"] == "true"
    comparison = gated.download_artifacts(evidence.info.run_id, "gate/comparison.txt")
    assert "REFUSED" in Path(comparison).read_text()
    assert str(gated.get_model_version_by_alias(GATED, registry.PREVIOUS_CHAMPION).version) == "1"

    rolled = _newscat(tracked_study, "rollback", GATED, "--reason", "drill over")
    assert rolled.returncode == 0, rolled.stderr[-3000:]
    assert str(gated.get_model_version_by_alias(GATED, "champion").version) == "1"
    history = json.loads(gated.get_registered_model(GATED).tags[tags.HISTORY_TAG])
    assert [(h["version"], h["forced"]) for h in history] == [("1", False), ("2", True), ("1", False)]


def test_evaluate_command_logs_a_report_linked_from_the_version(
    tracked_study: TrackedStudy, gated: MlflowClient
) -> None:
    result = _newscat(tracked_study, "evaluate", f"models:/{GATED}/1")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    run = gated.get_run(out["run_id"])
    assert run.data.metrics["test_accuracy"] == pytest.approx(out["accuracy"], abs=1e-4)
    assert {"evaluation/confusion_matrix.png", "evaluation/reliability_diagram.png"} <= {
        a.path for a in gated.list_artifacts(out["run_id"], "evaluation")
    }
    digest = run.data.tags["evaluation.digest"]
    assert gated.get_model_version(GATED, "1").tags[f"evaluation.{digest}.run_id"] == out["run_id"]
    missing = _newscat(tracked_study, "evaluate", "runs:/0123/model")
    assert missing.returncode == 1 and "pass --data" in missing.stderr


def test_check_command_counts_and_logs_behavioural_failures(tracked_study: TrackedStudy, gated: MlflowClient) -> None:
    from newscat.evaluation.checks import DIR_CASES, INV_TEMPLATES, MFT_CASES

    result = _newscat(tracked_study, "check", f"models:/{GATED}/2", "--strict")
    rows = [line.split() for line in result.stdout.splitlines() if line[:3] in ("MFT", "INV", "DIR")]
    lines = {row[0]: row[1:] for row in rows}
    counts = {kind: sum(map(int, values)) for kind, values in lines.items()}
    assert counts == {"MFT": len(MFT_CASES), "INV": len(INV_TEMPLATES), "DIR": len(DIR_CASES)}
    failed = sum(int(values[1]) for values in lines.values())
    assert f"{failed} failure(s)" in result.stdout
    assert result.returncode == (1 if failed else 0)  # --strict: failures are an error, never hidden
    tags = gated.get_model_version(GATED, "2").tags
    assert tags["checks.failed"] == str(failed)
    run = gated.get_run(tags["checks.last_run_id"])
    assert run.data.metrics["checks_MFT_failed"] == int(lines["MFT"][1])
    assert "checks/report.json" in {a.path for a in gated.list_artifacts(run.info.run_id, "checks")}
