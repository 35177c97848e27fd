"""Alias moves, their audit trail and rollback, against a real (sqlite) MLflow registry."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from newscat.registry import versions as registry


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    client = MlflowClient(tracking_uri=uri)
    client.create_registered_model("m")
    for _ in range(3):
        client.create_model_version("m", source=str(tmp_path / "model"))
    return client


def test_champion_moves_keep_the_previous_one_and_record_who_when_why(client: MlflowClient) -> None:
    registry.move_alias("m", "champion", "1", reason="first")
    assert registry.alias_version("m", registry.PREVIOUS_CHAMPION) is None
    registry.move_alias("m", "champion", "2", reason="better", forced=True, evidence="run-9")
    assert str(registry.alias_version("m", "champion").version) == "2"
    assert str(registry.alias_version("m", registry.PREVIOUS_CHAMPION).version) == "1"
    v2 = client.get_model_version("m", "2").tags
    assert v2["moved_to.champion"].endswith("by alice") and v2["moved_to.champion.reason"] == "better"
    assert v2["moved_to.champion.forced"] == "true" and v2["moved_to.champion.evidence"] == "run-9"
    assert "by alice: better" in client.get_model_version("m", "1").tags["left.champion"]


def test_rollback_restores_and_a_second_rollback_undoes_it(client: MlflowClient) -> None:
    registry.move_alias("m", "champion", "1", reason="first")
    registry.move_alias("m", "champion", "3", reason="newer")
    assert str(registry.rollback("m", reason="v3 misroutes sports").version) == "1"
    assert str(registry.alias_version("m", registry.PREVIOUS_CHAMPION).version) == "3"
    assert str(registry.rollback("m").version) == "3"
    history = registry.alias_history("m")
    assert [(h["version"], h["from"]) for h in history] == [("1", None), ("3", "1"), ("1", "3"), ("3", "1")]
    assert history[2]["reason"] == "v3 misroutes sports" and history[2]["by"] == "alice"


def test_rollback_without_a_previous_champion_is_refused(client: MlflowClient) -> None:
    with pytest.raises(registry.RegistryError, match="no 'previous-champion'"):
        registry.rollback("m")


def test_uris_resolve_to_versions_and_evaluations_are_linked(client: MlflowClient) -> None:
    registry.move_alias("m", "champion", "2", reason="x")
    assert str(registry.resolve_version("models:/m@champion").version) == "2"
    assert str(registry.resolve_version("models:/m/3").version) == "3"
    assert registry.resolve_version("runs:/abc/model") is None
    assert registry.resolve_version("models:/m@nosuch") is None
    registry.link_evaluation("models:/m/3", "run-1", "digest9")
    tags = client.get_model_version("m", "3").tags
    assert tags["evaluation.digest9.run_id"] == "run-1" and tags["evaluation.last_run_id"] == "run-1"
    with pytest.raises(registry.RegistryError, match="no version 7"):
        registry.version_by_number("m", "7")


def test_audit_finds_alias_moves_newscat_did_not_make(client: MlflowClient) -> None:
    from newscat.registry.audit import audit

    registry.set_alias(client, "m", "challenger", "3")
    registry.move_alias("m", "champion", "1", reason="first")
    registry.move_alias("m", "champion", "2", reason="better")  # previous-champion -> 1, recorded too
    clean = audit("m")
    assert clean.findings == [] and clean.aliases == {"challenger": "3", "champion": "2", "previous-champion": "1"}
    assert "every alias is where newscat's recorded moves put it" in clean.text()

    client.set_registered_model_alias("m", "champion", "3")  # as the UI's alias editor or the REST API would
    client.set_registered_model_alias("m", "staging", "1")
    client.delete_registered_model_alias("m", "challenger")
    report = audit("m")
    assert [(f.alias, f.registry, f.recorded) for f in report.findings] == [
        ("challenger", None, "3"),
        ("champion", "3", "2"),
        ("staging", "1", None),
    ]
    assert "champion -> version 3: moved outside newscat (newscat last pointed it at version 2)" in report.text()


@pytest.mark.parametrize(
    ("source", "model_id"),
    [
        ("models:/m-0123abc", "m-0123abc"),  # a LoggedModel's URI
        ("models:///m-0123abc", "m-0123abc"),
        ("models:/m-0123abc?x=1", "m-0123abc"),
        ("models:/m/1", None),  # a registered version's
        ("models:/m@champion", None),  # an alias's
        ("models:/m/Production", None),  # a stage's
        ("models:/m/latest", None),
        ("models:/m-0123abc/", None),  # not well formed
        ("models:/", None),
        ("models:/a/b/c", None),
        ("Models:/m-0123abc", None),
        ("runs:/0123abc/model", None),  # other schemes
        ("/tmp/model", None),
        ("", None),
    ],
)
def test_a_version_names_its_logged_model_only_by_a_models_id_uri(source: str, model_id: str | None) -> None:
    version = mlflow.entities.model_registry.ModelVersion("m", "1", 0, source=source)
    assert registry.version_model_id(version) == model_id
