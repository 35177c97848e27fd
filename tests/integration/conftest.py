"""One real `mlflow run . --env-manager local` on tiny data, shared by the integration tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.tracking import MlflowClient

from tests.conftest import write_ag_news_dir

ROOT = Path(__file__).resolve().parents[2]
MODEL_NAME = "newscat-tiny"
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


def tool_env(tracking_uri: str) -> dict[str, str]:
    """The environment for subprocesses: this interpreter's bin first, offline, a temp tracking store."""
    env = dict(os.environ)
    env.pop("MLFLOW_RUN_ID", None)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        MLFLOW_TRACKING_URI=tracking_uri,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


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
    data = write_ag_news_dir(root / "data", n_train=24, n_test=6)
    (root / "space.yaml").write_text(SEARCH_SPACE)
    work_dir = root / "work"
    # One evaluation per epoch keeps the pruning of trial 1 deterministic on 18 rows (tests/unit/test_train.py
    # covers several per epoch).
    (root / "config.yaml").write_text(
        f"data:\n  validation_fraction: 0.25\ntrain:\n  work_dir: {work_dir}\n  evals_per_epoch: 1\n"
    )
    tracking_uri = f"sqlite:///{root}/mlflow.db"
    storage = f"sqlite:///{root}/optuna.db"
    params = {
        "data": data,
        "n_trials": 3,
        "max_epochs": 2,
        "max_train_samples": 0,
        "max_eval_samples": 0,
        "max_length": 32,
        "storage": storage,
        "study_name": "tiny",
        "search_space": root / "space.yaml",
        "config": root / "config.yaml",
        "registered_model": MODEL_NAME,
        "promote": "auto",  # the gate under `mlflow run`: no champion yet, so the new version becomes champion
    }
    command = ["mlflow", "run", str(ROOT), "--env-manager", "local", "--experiment-name", "tiny"]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    result = subprocess.run(command, cwd=root, env=tool_env(tracking_uri), capture_output=True, text=True, timeout=900)
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running(command: list[str], env: dict[str, str], log_path: Path, ready_path: str) -> Iterator[str]:
    """Start a server process on a free port (`{port}` in `command`), wait until `ready_path` answers 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [part.format(port=port) for part in command], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                assert process.poll() is None, log_path.read_text()[-3000:]
                try:
                    if requests.get(f"{url}{ready_path}", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                time.sleep(1)
            else:
                pytest.fail(f"{command[0]} did not answer {ready_path} within 180 s")
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


def serve_model(model_uri: str, env: dict[str, str], log_path: Path) -> AbstractContextManager[str]:
    """A real `mlflow models serve` process for `model_uri`; the context gives its URL."""
    command = ["mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1"]
    return running([*command, "-p", "{port}"], env, log_path, "/ping")


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
