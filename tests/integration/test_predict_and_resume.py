"""`newscat predict` over a file, and a study resumed by a second `newscat tune` process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import optuna
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from tests.helpers import CLASSES, MODEL_NAME, TinyProject, tiny_project, tool_env
from tests.integration.conftest import TrackedStudy

pytestmark = pytest.mark.integration


def test_predict_scores_a_csv_in_batches(tracked_study: TrackedStudy, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("text\n" + "\n".join(f"Lakers win game {i}" for i in range(5)) + "\n")
    out = tmp_path / "out.jsonl"
    result = subprocess.run(
        [
            "newscat",
            "predict",
            f"models:/{MODEL_NAME}@challenger",
            "-i",
            str(source),
            "-o",
            str(out),
            "--batch-size",
            "2",
        ],
        env=tool_env(tracked_study.tracking_uri),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["text"] for row in rows] == [f"Lakers win game {i}" for i in range(5)]
    assert all(row["label"] in CLASSES and 0.0 < row["score"] <= 1.0 for row in rows)
    assert "scored 5 text(s)" in result.stderr


def _tune(project: TinyProject, n_trials: int) -> subprocess.CompletedProcess:
    return project.tune(
        n_trials=n_trials,
        max_epochs=1,
        max_train_samples=8,  # of 12 training rows: trials see 8, the refit all 12
        study_name="resume",
        experiment="resume",
        registered_model="newscat-resume",
        promote="auto",
        serving_paths="none",  # the resume is the subject, not the release's serving paths
        lexical="off",
    )


def test_rerun_resumes_the_study_instead_of_starting_over(tmp_path: Path) -> None:
    project = tiny_project(tmp_path, n_train=4, n_test=3, evals_per_epoch=None)  # 16 rows: 4 validation, 12 train
    first = _tune(project, n_trials=1)
    assert first.returncode == 0, first.stderr[-4000:]
    storage = project.storage
    trial0 = optuna.load_study(study_name="resume", storage=storage).trials[0]

    second = _tune(project, n_trials=2)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "running up to 1 trial(s) of 2" in second.stderr
    trials = optuna.load_study(study_name="resume", storage=storage).trials
    assert len(trials) == 2
    assert trials[0].datetime_start == trial0.datetime_start  # kept, not retrained
    assert trials[0].user_attrs["mlflow_run_id"] == trial0.user_attrs["mlflow_run_id"]

    third = _tune(project, n_trials=2)
    assert third.returncode == 0, third.stderr[-4000:]
    assert "already has 2 finished trials" in third.stderr

    client = MlflowClient(tracking_uri=project.tracking_uri)
    parents = {client.get_run(t.user_attrs["mlflow_run_id"]).data.tags["mlflow.parentRunId"] for t in trials}
    assert len(parents) == 1  # the resumed study kept its parent run
    versions = client.search_model_versions("name='newscat-resume'")
    assert len(versions) == len({v.tags["trial_run_id"] for v in versions})  # no duplicate registration
    # Each registered model is a refit of its trial's params on all 12 rows, in a nested run of the study.
    for version in versions:
        refit = client.get_run(version.tags["weights_run_id"])
        assert refit.data.tags["newscat.role"] == "refit"
        assert refit.data.tags["mlflow.parentRunId"] in parents
        assert refit.data.params["train_rows"] == version.tags["train_rows"] == "12"
        assert refit.info.status == "FINISHED"
        release = client.get_logged_model(version.source.removeprefix("models:/"))
        assert release.name == f"release-trial-{version.tags['trial']}" and release.status == LoggedModelStatus.READY
        model = client.get_logged_model(release.tags["newscat.source_model_id"])  # the weights it packages
        assert model.name == f"refit-trial-{version.tags['trial']}" and model.source_run_id == refit.info.run_id
        assert model.params["train_rows"] == release.params["train_rows"] == "12"
    assert "refit: trial" in first.stderr and "refit: trial" not in third.stderr
    # promote=auto: every new version faced the gate; the champion is the last version that passed it.
    gate_runs = client.search_runs(
        [client.get_experiment_by_name("newscat-promotions").experiment_id], order_by=["attributes.start_time ASC"]
    )
    assert [r.data.tags["gate.challenger"] for r in gate_runs] == sorted(str(v.version) for v in versions)
    assert gate_runs[0].data.tags["gate.passed"] == "true"  # no champion yet
    passed = [r.data.tags["gate.challenger"] for r in gate_runs if r.data.tags["gate.passed"] == "true"]
    assert str(client.get_model_version_by_alias("newscat-resume", "champion").version) == passed[-1]
    assert "promotion gate (run" in first.stderr and "PASS: no champion yet" in first.stderr
    # Resumes add the missing trials' models, never duplicates: one READY model per complete trial, refit and release.
    experiment = client.get_experiment_by_name("resume").experiment_id
    names = sorted(m.name for m in client.search_logged_models(experiment_ids=[experiment]))
    complete = [t.number for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    refits = sorted(f"{kind}-trial-{v.tags['trial']}" for v in versions for kind in ("refit", "release"))
    assert names == sorted([*(f"trial-{n}" for n in complete), *refits])
