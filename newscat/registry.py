"""Model Registry: register versions with tags and a description; move aliases (never stages)."""

from __future__ import annotations

from collections.abc import Mapping

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient


class RegistryError(ValueError):
    """A registry request cannot be carried out."""


def register_version(
    model_uri: str, name: str, *, tags: Mapping[str, str], description: str, alias: str | None = "challenger"
) -> ModelVersion:
    """Register `model_uri` as a new version of `name`, tag and describe it, and point `alias` at it."""
    version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    client = MlflowClient()
    client.update_model_version(name, version.version, description=description)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return client.get_model_version(name, version.version)


def find_version(name: str, trial_run_id: str) -> ModelVersion | None:
    """The version already registered from this trial's run, if any (so a resume does not duplicate it)."""
    try:
        found = MlflowClient().search_model_versions(f"name='{name}' and tags.trial_run_id='{trial_run_id}'")
    except MlflowException:
        return None
    return max(found, key=lambda v: int(v.version), default=None)


def promote(name: str, *, to_alias: str, version: str | None = None, from_alias: str | None = None) -> ModelVersion:
    """Point `to_alias` at `version`, or at the version that `from_alias` points at now."""
    if (version is None) == (from_alias is None):
        raise RegistryError("give exactly one of a version or an alias to promote from")
    client = MlflowClient()
    try:
        target = (
            client.get_model_version_by_alias(name, from_alias)
            if from_alias
            else client.get_model_version(name, str(version))
        )
    except MlflowException as exc:
        what = f"alias {from_alias!r}" if from_alias else f"version {version}"
        raise RegistryError(f"registered model {name!r} has no {what}: {exc.message}") from exc
    client.set_registered_model_alias(name, to_alias, target.version)
    return client.get_model_version(name, target.version)
