"""Trace retention: delete a served model's traces (and the true labels on them) older than a window."""

from __future__ import annotations

import time

from newscat.config import ConfigError, window_seconds
from newscat.monitoring.monitor import resolve_version
from newscat.registry.versions import version_model_id
from newscat.tracking.live import delete_traces_before, experiment_id_of, experiment_name, traces_experiment_id


def prune_traces(older_than: str, *, target: str = "", experiment: str = "") -> tuple[int, str]:
    """Delete the traces started before `older_than` (90d, 12h, 30m) in `experiment`, or else in the experiment of
    the model `target` (NAME@ALIAS or NAME/VERSION) points at, where the server traces by default. Returns how many
    were deleted and the experiment's name."""
    if not target and not experiment:
        raise ConfigError("name the model (NAME@ALIAS) whose experiment holds the traces, or --experiment")
    cutoff_ms = int(time.time() * 1000) - window_seconds(older_than) * 1000
    if experiment:
        experiment_id = experiment_id_of(experiment)
        if experiment_id is None:
            raise ConfigError(f"no experiment {experiment!r} in the tracking store")
    else:
        model_id = version_model_id(resolve_version(target))
        if not model_id:
            raise ConfigError(f"{target} is not linked to a LoggedModel: name the traces' --experiment")
        experiment_id = traces_experiment_id("", model_id)
        experiment = experiment_name(experiment_id)
    return delete_traces_before(experiment_id, cutoff_ms), experiment
