"""Model Registry: register versions with tags and a description; move aliases (never stages)."""

from __future__ import annotations

import getpass
import json
import logging
import os
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import NoReturn

import mlflow
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
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
from newscat.tracking.store import is_missing, raise_failure

log = logging.getLogger("newscat")
MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # on a LoggedModel: the versions registered from it (as register_model)


class RegistryError(NewscatError):
    """A registry request cannot be carried out."""


def register_version(
    model_uri: str, name: str, *, tags: VersionTags, description: str, alias: str | None = "challenger"
) -> ModelVersion:
    """Register `model_uri` as a new version of `name` (with its tags), describe it, and point `alias` at it.

    Each step is logged once done; a process killed between them leaves a version that `find_version` finds and
    `finish_registration` completes.
    """
    version = mlflow.register_model(model_uri, name, tags=tags.to_tags())
    log.info("registered %s version %s from %s", name, version.version, model_uri)
    return finish_registration(version, description=description, alias=alias, tags=tags.to_tags())


def set_version_tags(name: str, version: str, tags: dict[str, str]) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value[:TAG_VALUE_LIMIT])


def append_description(name: str, version: str, section: str) -> None:
    """Add `section` to a version's description (its model card) unless it is there already (a rerun)."""
    client = MlflowClient()
    current = client.get_model_version(name, version).description or ""
    if section.strip() not in current:
        client.update_model_version(name, version, description=current.rstrip() + section)


def finish_registration(
    version: ModelVersion,
    *,
    description: str | None,
    alias: str | None = "challenger",
    tags: Mapping[str, str] | None = None,
) -> ModelVersion:
    """Complete a registration wherever it stopped: missing or different `tags`, the description, the link from the
    LoggedModel to the version, `alias` (and its record). Logs what it found and what it completed; returns the
    version as it now stands. `description` None keeps the version's own.

    `alias` is not taken back from a newer version holding it (a later registration has superseded this one).
    """
    client = MlflowClient()
    name, number = version.name, str(version.version)
    version = client.get_model_version(name, number)  # as it stands now, not as a search found it
    done = []
    missing = {k: v for k, v in (tags or {}).items() if version.tags.get(k) != v}
    for key, value in missing.items():
        client.set_model_version_tag(name, number, key, value)
    if missing:
        done.append(f"tags {', '.join(sorted(missing))}")
    if description is not None and (version.description or "") != description:
        client.update_model_version(name, number, description=description)
        done.append("description")
        log.info("described %s version %s", name, number)
    if _link_logged_model(client, version):
        done.append("link from its LoggedModel")
    if alias and _point_alias(client, name, alias, number):
        done.append(f"alias {alias}")
    log.info(
        "%s version %s: %s",
        name,
        number,
        f"completed {'; '.join(done)}" if done else "registration found complete (tags, description, alias)",
    )
    return client.get_model_version(name, number)


def _link_logged_model(client: MlflowClient, version: ModelVersion) -> bool:
    """Record the version on its LoggedModel (`mlflow.modelVersions`, shown by the UI) when `register_model` was
    cut short before it did; True when it was missing."""
    model_id = version_model_id(version)
    if model_id is None:
        return False
    model = client.get_logged_model(model_id)
    linked = json.loads(model.tags.get(MODEL_VERSIONS_TAG, "[]"))
    entry = {"name": version.name, "version": int(version.version)}  # as register_model writes it
    if any(str(e.get("version")) == str(entry["version"]) and e.get("name") == entry["name"] for e in linked):
        return False
    client.set_logged_model_tags(model_id, {MODEL_VERSIONS_TAG: json.dumps([*linked, entry])})
    return True


def _point_alias(client: MlflowClient, name: str, alias: str, number: str) -> bool:
    """Point `alias` at version `number` and record it, unless it is so already or a newer version holds it; True
    when something was set."""
    holder = alias_version(name, alias)
    recorded = recorded_aliases(client.get_registered_model(name)).get(alias)
    if holder is not None and int(holder.version) > int(number):
        log.info("%s@%s is held by the newer version %s: left there", name, alias, holder.version)
        return False
    if holder is not None and str(holder.version) == number and recorded == number:
        return False
    set_alias(client, name, alias, number)
    log.info("pointed %s@%s at version %s", name, alias, number)
    return True


def find_version(name: str, trial_run_id: str) -> ModelVersion | None:
    """The version already registered from this trial's run, if any (so a resume does not duplicate it).

    A failed search raises: read as "none", it would register the same weights twice.
    """
    try:
        found = MlflowClient().search_model_versions(f"name='{name}' and tags.{TRIAL_RUN_ID}='{trial_run_id}'")
    except MlflowException as exc:
        _raise_failure(exc, f"looking for the version of {name} registered from run {trial_run_id}")
    return max(found, key=lambda v: int(v.version), default=None)


PREVIOUS_CHAMPION = "previous-champion"
HISTORY_LENGTH = 20  # moves kept in the registered model's history tag


def alias_version(name: str, alias: str) -> ModelVersion | None:
    """The version `alias` points at, or None when the store says the alias (or the model) does not exist.

    Any other failure (an unreachable server, an error 500) raises a RegistryError: read as "not set", an outage
    would let a challenger become champion without facing the champion.
    """
    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if _alias_missing(exc):
            return None
        _raise_failure(exc, f"looking up {name}@{alias}")


def _alias_missing(exc: MlflowException) -> bool:
    """The store's answer for an alias that is not set: INVALID_PARAMETER_VALUE "Registered model alias X not found."
    (MLflow 3.17's SQL stores and REST server alike), or RESOURCE_DOES_NOT_EXIST for a model that does not exist."""
    message = str(exc.message)
    return is_missing(exc) or (
        exc.error_code == "INVALID_PARAMETER_VALUE" and "alias" in message and "not found" in message
    )


def _raise_failure(exc: MlflowException, action: str) -> NoReturn:
    """A refusal (401/403) as it is (the CLI says what to set); anything else as a RegistryError saying what failed,
    where, and what to do."""
    raise_failure(exc, action, error=RegistryError, uri=mlflow.get_registry_uri())


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
        if is_missing(exc):
            raise RegistryError(f"registered model {name!r} has no version {version}: {exc.message}") from exc
        _raise_failure(exc, f"looking up version {version} of {name}")


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
    if "@" in path:
        name, alias = path.split("@", 1)
        return alias_version(name, alias)
    name, _, version = path.partition("/")
    if not version.isdigit():
        return None
    try:
        return MlflowClient().get_model_version(name, version)
    except MlflowException as exc:
        if is_missing(exc):
            return None
        _raise_failure(exc, f"looking up {model_uri}")


def model_id_of(model_uri: str) -> str | None:
    """The LoggedModel behind a URI: `models:/<model_id>`, or a registered version created from one (its source)."""
    version = resolve_version(model_uri)
    return version_model_id(version) if version is not None else _model_id_in(model_uri)


def version_model_id(version: ModelVersion) -> str | None:
    """The LoggedModel a version was registered from (its source is `models:/<model_id>`); None for other sources."""
    return _model_id_in(str(version.source or "")) or getattr(version, "model_id", None)


def _model_id_in(uri: str) -> str | None:
    """The id in a `models:/<model_id>` URI (MLflow's documented URI of a LoggedModel), parsed without asking the
    store; None for any other URI: another scheme, a registered model's `models:/name/<version, stage or latest>` or
    `models:/name@alias`, or one that is not well formed. The same reading as MLflow's own parser of models:/ URIs."""
    if not uri.startswith("models:/"):
        return None
    parsed = urllib.parse.urlparse(uri, allow_fragments=False)
    if not parsed.path.startswith("/"):
        return None
    model_id = parsed.path.lstrip("/")
    if not model_id.strip() or "/" in model_id or "@" in model_id:
        return None
    return model_id


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
