"""A tracking server that dies during the trials fails `newscat tune` loudly, saying what to do; started again, the
same command resumes the study with nothing lost: the finished trial is kept, no run is left RUNNING, one version."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import tiny_project, tool_env
from tests.outage_servers import NO_RETRIES, MlflowServer

pytestmark = pytest.mark.integration
MODEL = "newscat-outage"
N_TRIALS = 2


def _wait_for(path: Path, text: str, process: subprocess.Popen, timeout_s: float = 600) -> None:
    """Until `text` appears in the log at `path` (the job is still running), or fail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        assert process.poll() is None, path.read_text()[-4000:]
        time.sleep(0.2)
    pytest.fail(f"{text!r} did not appear within {timeout_s:.0f} s")


def test_a_tracking_server_killed_during_trials_fails_the_job_and_the_rerun_resumes(tmp_path: Path) -> None:
    root = tmp_path / "server"
    root.mkdir()
    server = MlflowServer(root, f"sqlite:///{root}/mlflow.db").start()
    project = tiny_project(tmp_path / "project", n_train=6, n_test=2)
    flags = {"n_trials": N_TRIALS, "max_epochs": 1, "no_refit": True, "study_name": "outage", "experiment": "outage"}
    args = project.tune_args(**flags, registered_model=MODEL, serving_paths="none", lexical="off")
    log = tmp_path / "first.log"
    try:
        with log.open("w") as out:
            job = subprocess.Popen(
                args, cwd=project.root, env={**tool_env(server.url), **NO_RETRIES}, stdout=out, stderr=out
            )
            _wait_for(log, f"trial 1 of {N_TRIALS}", job)  # trial 0 is finished and logged; trial 1 is training
            server.stop()
            assert job.wait(timeout=600) != 0
        first = log.read_text()
        last = first.strip().splitlines()[-1]  # what the user reads last: what failed and what to do
        assert last.startswith("Error: ") and last.endswith("the study resumes where it stopped.")
        assert "tracking server at http://127.0.0.1" in last

        server.start()  # the same store, on a new port
        rerun = subprocess.run(
            args, cwd=project.root, env=tool_env(server.url), capture_output=True, text=True, timeout=900
        )
        assert rerun.returncode == 0, rerun.stderr[-4000:]
        study = optuna.load_study(study_name="outage", storage=project.storage)
        finished = [
            t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        ]
        assert len(finished) == N_TRIALS and finished[0].number == 0  # trial 0 kept, not trained again
        client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
        experiment = client.get_experiment_by_name("outage")
        runs = client.search_runs([experiment.experiment_id])
        assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
        trial_0 = client.get_run(finished[0].user_attrs["mlflow_run_id"])
        assert trial_0.info.status == "FINISHED"
        assert len(client.search_model_versions(f"name='{MODEL}'")) == 1
    finally:
        server.stop()
