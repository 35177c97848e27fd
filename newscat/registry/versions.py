"""Model Registry: register versions with tags and a description; move aliases (never stages)."""

from __future__ import annotations

import getpass
import json
import os
from datetime import UTC, datetime

import mlflow
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.utils.models import _parse_model_id_if_present
from mlflow.tracking import MlflowClient

from newscat.errors import NewscatError
from newscat.registry.tags import (
    ALIASES_TAG,
    CHECKS_FAILED,
    CHECKS_LAST,
    EVALUATION_LAST,
    HISTORY_TAG,
    TRIAL_RUN_ID,
    VersionTags,
    evaluation_tag,
    left_tag,
    move_tags,
)
from newscat.tracking.limits import TAG_VALUE_LIMIT


class RegistryError(NewscatError):
    """A registry request cannot be carried out."""


def register_version(
    model_uri: str, name: str, *, tags: VersionTags, description: str, alias: str | None = "challenger"
) -> ModelVersion:
    """Register `model_uri` as a new version of `name`, tag and describe it, and point `alias` at it."""
    version = mlflow.register_model(model_uri, name, tags=tags.to_tags())
    client = MlflowClient()
    client.update_model_version(name, version.version, description=description)
    if alias:
        set_alias(client, name, alias, str(version.version))
    return client.get_model_version(name, version.version)


def find_version(name: str, trial_run_id: str) -> ModelVersion | None:
    """The version already registered from this trial's run, if any (so a resume does not duplicate it)."""
    try:
        found = MlflowClient().search_model_versions(f"name='{name}' and tags.{TRIAL_RUN_ID}='{trial_run_id}'")
    except MlflowException as exc:
        _reraise_refusal(exc)
        return None
    return max(found, key=lambda v: int(v.version), default=None)


PREVIOUS_CHAMPION = "previous-champion"
HISTORY_LENGTH = 20  # moves kept in the registered model's history tag


def alias_version(name: str, alias: str) -> ModelVersion | None:
    """The version `alias` points at, or None when the alias is not set."""
    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        _reraise_refusal(exc)
        return None


def _reraise_refusal(exc: MlflowException) -> None:
    """A server's 401/403 is not "not found": let it through to the CLI, which says what to set."""
    if exc.get_http_status_code() in (401, 403):
        raise exc


def version_by_alias(name: str, alias: str) -> ModelVersion:
    """The version `alias` points at; a RegistryError names the missing alias."""
    found = alias_version(name, alias)
    if found is None:
        raise RegistryError(f"registered model {name!r} has no alias {alias!r}")
    return found


def version_by_number(name: str, version: str) -> ModelVersion:
    """Version `version` of `name`; a RegistryError says when it does not exist."""
    try:
        return MlflowClient().get_model_version(name, str(version))
    except MlflowException as exc:
        _reraise_refusal(exc)
        raise RegistryError(f"registered model {name!r} has no version {version}: {exc.message}") from exc


def actor() -> str:
    """Who is moving aliases: the tracking server user when one is set, else the OS user."""
    return os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()


def move_alias(
    name: str, alias: str, version: str, *, reason: str, forced: bool = False, evidence: str = ""
) -> ModelVersion:
    """Point `alias` at `version` and record who, when and why on the versions and in the model's history.

    Moving `champion` keeps the version it leaves reachable as `previous-champion` (see `rollback`).
    """
    client = MlflowClient()
    who, when = actor(), datetime.now(UTC).isoformat(timespec="seconds")
    leaving = alias_version(name, alias)
    if leaving is not None and str(leaving.version) == str(version):
        return leaving
    if leaving is not None and alias == "champion":
        set_alias(client, name, PREVIOUS_CHAMPION, str(leaving.version))
        note = f"{when} by {who}: {reason}"[:TAG_VALUE_LIMIT]
        client.set_model_version_tag(name, str(leaving.version), left_tag(alias), note)
    set_alias(client, name, alias, str(version))
    tags = move_tags(alias, when_by=f"{when} by {who}", reason=reason, forced=forced, evidence=evidence)
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)
    _append_history(
        client,
        name,
        {
            "alias": alias,
            "version": str(version),
            "from": str(leaving.version) if leaving else None,
            "by": who,
            "at": when,
            "reason": reason[:300],
            "forced": forced,
        },
    )
    return client.get_model_version(name, str(version))


def set_alias(client: MlflowClient, name: str, alias: str, version: str) -> None:
    """Point `alias` at `version` and record it (`newscat.aliases`), so that `newscat audit` can tell newscat's moves
    from moves made elsewhere."""
    client.set_registered_model_alias(name, alias, version)
    recorded = recorded_aliases(client.get_registered_model(name))
    client.set_registered_model_tag(name, ALIASES_TAG, json.dumps({**recorded, alias: version}, sort_keys=True))


def recorded_aliases(model: RegisteredModel) -> dict[str, str]:
    """alias -> version as newscat last set them."""
    return json.loads(model.tags.get(ALIASES_TAG, "{}"))


def rollback(name: str, *, reason: str = "rollback") -> ModelVersion:
    """Point `champion` back at `previous-champion` (which then holds the version rolled back from)."""
    previous = alias_version(name, PREVIOUS_CHAMPION)
    if previous is None:
        raise RegistryError(f"registered model {name!r} has no {PREVIOUS_CHAMPION!r} to roll back to")
    return move_alias(name, "champion", str(previous.version), reason=reason)


def alias_history(name: str) -> list[dict]:
    """The recorded alias moves of `name`, oldest first."""
    tags = MlflowClient().get_registered_model(name).tags
    return json.loads(tags.get(HISTORY_TAG, "[]"))


def _append_history(client: MlflowClient, name: str, entry: dict) -> None:
    history = [*alias_history(name)[-(HISTORY_LENGTH - 1) :], entry]
    while len(json.dumps(history)) > TAG_VALUE_LIMIT - 500 and len(history) > 1:  # tag values are limited in length
        history.pop(0)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))


def resolve_version(model_uri: str) -> ModelVersion | None:
    """The registered version a `models:/name/version` or `models:/name@alias` URI names; None for other URIs."""
    if not model_uri.startswith("models:/"):
        return None
    path = model_uri[len("models:/") :].strip("/")
    try:
        if "@" in path:
            name, alias = path.split("@", 1)
            return MlflowClient().get_model_version_by_alias(name, alias)
        name, _, version = path.partition("/")
        return MlflowClient().get_model_version(name, version) if version.isdigit() else None
    except MlflowException as exc:
        _reraise_refusal(exc)
        return None


def model_id_of(model_uri: str) -> str | None:
    """The LoggedModel behind a URI: `models:/<model_id>`, or a registered version created from one (its source)."""
    version = resolve_version(model_uri)
    source = version.source if version is not None else model_uri
    try:
        return _parse_model_id_if_present(source)
    except MlflowException:
        return None


def link_evaluation(model_uri: str, run_id: str, digest: str) -> None:
    """Tag the evaluated registered version with the evaluation run, per data digest (compare like with like)."""
    version = resolve_version(model_uri)
    if version is None:
        return
    client = MlflowClient()
    client.set_model_version_tag(version.name, version.version, evaluation_tag(digest), run_id)
    client.set_model_version_tag(version.name, version.version, EVALUATION_LAST, run_id)


def link_checks(model_uri: str, run_id: str, failed: int) -> None:
    """Tag the checked registered version with the checks run and its failure count."""
    version = resolve_version(model_uri)
    if version is not None:
        client = MlflowClient()
        client.set_model_version_tag(version.name, version.version, CHECKS_LAST, run_id)
        client.set_model_version_tag(version.name, version.version, CHECKS_FAILED, str(failed))
