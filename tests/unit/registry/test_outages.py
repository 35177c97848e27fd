"""A registry that fails is never read as "not set": only the store's own "does not exist" is an answer, and any
other failure stops the command with what failed, where and what to do (a real server stopped mid-command:
tests/integration/test_registry_outage.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from newscat.registry import versions
from newscat.registry.promotion import promote_with_gate
from tests.helpers import tool_env
from tests.outage_servers import NO_RETRIES, answering

LOOKUPS: dict[str, Callable[[], object]] = {
    "alias": lambda: versions.alias_version("m", "champion"),
    "version": lambda: versions.version_by_number("m", "1"),
    "resume search": lambda: versions.find_version("m", "run-1"),
    "alias uri": lambda: versions.resolve_version("models:/m@champion"),
    "version uri": lambda: versions.resolve_version("models:/m/1"),
    "model id": lambda: versions.model_id_of("models:/m/1"),
    "gate": lambda: promote_with_gate("m", version="1"),
}


@pytest.mark.parametrize("lookup", LOOKUPS.values(), ids=LOOKUPS.keys())
def test_a_registry_answering_500_stops_the_lookup_with_what_to_do(broken: str, lookup: Callable[[], object]) -> None:
    with pytest.raises(versions.RegistryError) as raised:
        lookup()
    message = str(raised.value)
    assert f"failed: the tracking server at {broken} did not answer it" in message
    assert "500" in message and "Nothing was changed" in message and "rerun the same command" in message


def test_a_refusal_still_reaches_the_cli_as_mlflows_401(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in NO_RETRIES.items():
        monkeypatch.setenv(name, value)
    previous = mlflow.get_tracking_uri()
    with answering(401) as url:
        mlflow.set_tracking_uri(url)
        try:
            with pytest.raises(MlflowException) as raised:
                versions.alias_version("m", "champion")
        finally:
            mlflow.set_tracking_uri(previous)
    assert not isinstance(raised.value, versions.RegistryError) and raised.value.get_http_status_code() == 401


def test_only_the_stores_does_not_exist_reads_as_missing(tracking_uri: str, tmp_path: Path) -> None:
    client = MlflowClient()
    client.create_registered_model("m")
    client.create_model_version("m", source=str(tmp_path / "model"), tags={"trial_run_id": "run-1"})
    assert versions.alias_version("m", "champion") is None  # INVALID_PARAMETER_VALUE "alias champion not found"
    assert versions.alias_version("nosuch", "champion") is None  # RESOURCE_DOES_NOT_EXIST
    assert versions.find_version("m", "run-2") is None and versions.find_version("nosuch", "run-1") is None
    assert str(versions.find_version("m", "run-1").version) == "1"
    assert versions.resolve_version("models:/m/9") is None and versions.resolve_version("models:/m@champion") is None
    assert versions.model_id_of("models:/m/9") is None and versions.model_id_of("models:/m-abc") == "m-abc"
    with pytest.raises(versions.RegistryError, match="has no version 9"):
        versions.version_by_number("m", "9")
    versions.set_alias(client, "m", "champion", "1")
    assert str(versions.alias_version("m", "champion").version) == "1"


def test_newscat_promote_against_a_server_answering_500_exits_1_and_says_what_to_do(tmp_path: Path) -> None:
    with answering(500) as url:
        env = {**tool_env(url), **NO_RETRIES}
        result = subprocess.run(
            ["newscat", "promote", "m"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"Error: looking up m@challenger failed: the tracking server at {url} did not answer it" in result.stderr
    assert "Nothing was changed" in result.stderr and "Traceback" not in result.stderr
