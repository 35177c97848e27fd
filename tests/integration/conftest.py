"""One real `mlflow run . --env-manager local` on tiny data, shared by the integration tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import MODEL_NAME, ROOT, tiny_project, tool_env

# Trial 0 learns (lr 5e-4); trial 1 barely moves (lr 1e-7), so the median pruner stops it after epoch 1.
SEARCH_SPACE = """\
learning_rate: {low: 1.0e-7, high: 1.0e-3, log: true}
batch_size: 8
epochs: 2
warmup_ratio: 0.0
weight_decay: 0.0
enqueue:
  - {learning_rate: 5.0e-4}
  - {learning_rate: 1.0e-7}
"""


@dataclass(frozen=True)
class TrackedStudy:
    root: Path
    tracking_uri: str
    storage: str
    parent_run_id: str
    work_dir: Path
    output: str


@pytest.fixture(scope="session")
def tracked_study(tmp_path_factory: pytest.TempPathFactory) -> TrackedStudy:
    root = tmp_path_factory.mktemp("mlflow-run")
    # One evaluation per epoch keeps the pruning of trial 1 deterministic on 18 rows (tests/unit/training/
    # test_trainer.py covers several per epoch).
    project = tiny_project(
        root, n_train=24, n_test=6, space=SEARCH_SPACE, extra_config="data:\n  validation_fraction: 0.25\n"
    )
    work_dir, tracking_uri, storage = root / "work", project.tracking_uri, project.storage
    params = {
        "data": project.data,
        "n_trials": 3,
        "max_epochs": 2,
        "max_train_samples": 0,
        "max_eval_samples": 0,
        "max_length": 32,
        "storage": storage,
        "study_name": "tiny",
        "search_space": project.space,
        "config": project.config,
        "registered_model": MODEL_NAME,
        "promote": "auto",  # the gate under `mlflow run`: no champion yet, so the new version becomes champion
    }
    command = ["mlflow", "run", str(ROOT), "--env-manager", "local", "--experiment-name", "tiny"]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    # Serving switches a user may have exported for serving must not change what the release builds and checks.
    env = {**tool_env(tracking_uri), "NEWSCAT_BACKEND": "torch", "NEWSCAT_PRECISION": "fp32"}
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    mlflow.set_tracking_uri(tracking_uri)
    experiment = MlflowClient().get_experiment_by_name("tiny")
    parents = mlflow.search_runs([experiment.experiment_id], filter_string="tags.`newscat.role` = 'study'")
    assert len(parents) == 1
    return TrackedStudy(root, tracking_uri, storage, parents.iloc[0]["run_id"], work_dir, output)


@pytest.fixture
def client(tracked_study: TrackedStudy) -> MlflowClient:
    mlflow.set_tracking_uri(tracked_study.tracking_uri)
    return MlflowClient(tracking_uri=tracked_study.tracking_uri)


POSTGRES = os.environ.get("NEWSCAT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty PostgreSQL databases (dropped at the end) on the local server.

    Skipped where no server answers, unless NEWSCAT_REQUIRE_POSTGRES=1 (CI) makes that a failure.
    """
    import uuid

    import psycopg

    try:
        admin = psycopg.connect(POSTGRES, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as exc:
        if os.environ.get("NEWSCAT_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"no PostgreSQL at {POSTGRES}: {exc}")
    created: list[str] = []

    def create() -> str:
        name = f"newscat_test_{uuid.uuid4().hex[:10]}"
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        created.append(name)
        return POSTGRES.rsplit("/", 1)[0] + f"/{name}"

    try:
        yield create
    finally:
        with admin.cursor() as cursor:
            for name in created:
                cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
