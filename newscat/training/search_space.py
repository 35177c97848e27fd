"""The search space: a plain mapping of ranges, sampled as a function of the Optuna trial."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from newscat.config import ConfigError
from newscat.training.trainer import TrialParams

# Ranges that suit small BERTs (they tolerate and like larger learning rates than BERT-base).
DEFAULT_SPACE: dict[str, Any] = {
    "learning_rate": {"low": 2e-5, "high": 3e-4, "log": True},
    "batch_size": {"choices": [16, 32]},
    "epochs": {"low": 1, "high": 10},  # capped by max_epochs
    "warmup_ratio": {"low": 0.0, "high": 0.2},
    "weight_decay": {"low": 0.0, "high": 0.1},
}


# A known-good first trial, so that even a one-trial study gives a useful model.
DEFAULT_FIRST_TRIAL: dict[str, Any] = {
    "learning_rate": 1e-4,
    "batch_size": 32,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
}


INT_PARAMS = frozenset({"batch_size", "epochs"})


@dataclass(frozen=True)
class SearchSpace:
    """Per parameter: a fixed value, a {low, high[, log]} range or a {choices: [...]} list."""

    params: Mapping[str, Any]
    enqueue: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)


def search_space_from(values: Mapping[str, Any] | None, *, max_epochs: int) -> SearchSpace:
    """The built-in space, or the default one updated with `values` (validated)."""
    if not values:
        first = {**DEFAULT_FIRST_TRIAL, "epochs": max_epochs}
        return SearchSpace(params=_cap_epochs(DEFAULT_SPACE, max_epochs), enqueue=(first,))
    values = dict(values)
    enqueue = tuple(values.pop("enqueue", None) or ())
    unknown = set(values) - set(DEFAULT_SPACE)
    if unknown:
        raise ConfigError(
            f"unknown search-space parameter(s) {', '.join(sorted(unknown))}; known: {', '.join(DEFAULT_SPACE)}"
        )
    for name, spec in values.items():
        _check_spec(name, spec)
    for trial in enqueue:
        if not isinstance(trial, Mapping) or set(trial) - set(DEFAULT_SPACE):
            raise ConfigError(f"enqueue entries must map search-space parameters to values, got {trial!r}")
    return SearchSpace(params=_cap_epochs({**DEFAULT_SPACE, **values}, max_epochs), enqueue=enqueue)


def _cap_epochs(space: Mapping[str, Any], max_epochs: int) -> dict[str, Any]:
    space = dict(space)
    spec = space["epochs"]
    if isinstance(spec, Mapping) and "high" in spec:
        space["epochs"] = {**spec, "high": min(int(spec["high"]), max_epochs), "low": min(int(spec["low"]), max_epochs)}
    elif isinstance(spec, int):
        space["epochs"] = min(spec, max_epochs)
    return space


def _check_spec(name: str, spec: Any) -> None:
    if isinstance(spec, Mapping):
        if "choices" in spec:
            if not spec["choices"]:
                raise ConfigError(f"search space {name}: choices must not be empty")
        elif not {"low", "high"} <= set(spec) or not spec["low"] <= spec["high"]:
            raise ConfigError(f"search space {name}: needs low <= high, or choices, got {dict(spec)}")
        elif spec.get("log") and spec["low"] <= 0:
            raise ConfigError(f"search space {name}: a log range needs low > 0")
    elif not isinstance(spec, (int, float)):
        raise ConfigError(f"search space {name}: give a number, a range or choices, got {spec!r}")


def suggest_params(trial: optuna.Trial, space: SearchSpace) -> TrialParams:
    """Sample (or take fixed) values for every hyper-parameter from `space`."""
    values = {}
    for name, spec in space.params.items():
        if not isinstance(spec, Mapping):
            values[name] = spec
        elif "choices" in spec:
            values[name] = trial.suggest_categorical(name, list(spec["choices"]))
        elif name in INT_PARAMS:
            values[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]))
        else:
            values[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
    return TrialParams.from_values(values)


def enqueue_first_trials(study: optuna.Study, space: SearchSpace) -> None:
    """Queue the warm-start trials, but only into a study that has none yet."""
    if not study.trials:
        for params in space.enqueue:
            study.enqueue_trial(dict(params), skip_if_exists=True)


def trial_params(trial: optuna.trial.FrozenTrial, space: SearchSpace) -> TrialParams:
    """A finished trial's params: the sampled ones from Optuna, fixed ones from the search space."""
    values = {**{k: v for k, v in space.params.items() if not isinstance(v, Mapping)}, **trial.params}
    return TrialParams.from_values(values, whole_epochs=False)
