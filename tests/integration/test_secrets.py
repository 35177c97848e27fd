"""No secret in the store or the logs: a study whose PostgreSQL storage URL holds a password, given as a flag or as
NEWSCAT_STORAGE under `mlflow run`, leaves that password nowhere in the tracking store, its artifacts or the output.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url

from tests.helpers import ROOT, TinyProject, tiny_project

pytestmark = pytest.mark.integration

SECRET = "s3cret"  # the local server trusts 127.0.0.1, so any password connects; it must still never be written
MASKED = ":***@"
# One 1-epoch trial on 24 rows (all of them: no refit), torch only, no lexical companion: the smallest job that still
# logs every kind of record (params, tags, datasets, trial run, LoggedModel, study report, card, registered version).
SPACE = "learning_rate: 5.0e-4\nbatch_size: 8\nepochs: 1\nwarmup_ratio: 0.0\nweight_decay: 0.0\n"
FLAGS = {
    "n_trials": "1",
    "max_epochs": "1",
    "max_length": "24",
    "max_eval_samples": "0",
    "serving_paths": "none",
    "lexical": "off",
    "registered_model": "newscat-secrets",
}


@pytest.fixture
def secret_storage(postgres_database: Callable[[], str]) -> str:
    """A fresh PostgreSQL database, as a URL with a password."""
    url = make_url(postgres_database()).set(password=SECRET)
    return url.render_as_string(hide_password=False)


def test_a_password_in_the_storage_flag_is_written_nowhere(tmp_path: Path, secret_storage: str) -> None:
    project = tiny_project(tmp_path, space=SPACE)
    args = ["newscat", "tune", "--data", str(project.data), "--config", str(project.config)]
    args += ["--search-space", str(project.space), "--storage", secret_storage, "--study-name", "secret-flag"]
    args += [part for key, value in FLAGS.items() for part in (f"--{key.replace('_', '-')}", value)]
    result = subprocess.run(args, cwd=tmp_path, env=project.env(), capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    _assert_study_ran_and_no_secret_was_written(project, secret_storage, "secret-flag", output)


def test_newscat_storage_feeds_mlflow_run_and_its_password_is_written_nowhere(
    tmp_path: Path, secret_storage: str
) -> None:
    """The way to keep a password out of `mlflow run`'s own params: no `-P storage`, NEWSCAT_STORAGE instead."""
    project = tiny_project(tmp_path, space=SPACE)
    params = {**FLAGS, "data": project.data, "config": project.config, "search_space": project.space}
    params["study_name"] = "secret-env"  # and no `storage`: NEWSCAT_STORAGE gives it
    command = ["mlflow", "run", str(ROOT), "--env-manager", "local", "--experiment-name", "secrets"]
    command += [part for key, value in params.items() for part in ("-P", f"{key}={value}")]
    env = {**project.env(), "NEWSCAT_STORAGE": secret_storage}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    _assert_study_ran_and_no_secret_was_written(project, secret_storage, "secret-env", output)


def _assert_study_ran_and_no_secret_was_written(project: TinyProject, storage: str, study: str, output: str) -> None:
    # The study is in the PostgreSQL database: the real URL connected.
    trials = optuna.load_study(study_name=study, storage=storage).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE]
    assert SECRET not in output, "the password was printed"
    # Every byte the job wrote: the sqlite tracking store, every artifact, checkpoint and model file.
    written = [path for path in project.root.rglob("*") if path.is_file()]
    assert project.root / "mlflow.db" in written and len(written) > 20
    leaked = [str(path.relative_to(project.root)) for path in written if SECRET.encode() in path.read_bytes()]
    assert not leaked, f"the password was written into {leaked}"
    # The parent run still records which storage, masked: the param is there, only its password is not.
    client = MlflowClient(tracking_uri=project.tracking_uri)
    (parent,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], filter_string="tags.`newscat.role` = 'study'"
    )
    masked = make_url(storage).render_as_string(hide_password=True)
    assert parent.data.params["tune.storage"] == masked and MASKED in masked
    assert client.get_model_version("newscat-secrets", "1").status == "READY"
