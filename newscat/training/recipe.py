"""The recipe: everything that produced a model's weights, the trial's sampled params and the config's fixed ones.

One object read by all who need it: a trial and the refit log it as their run's params and their LoggedModel's
params (`Recipe.run_params`, `Recipe.model_params`), the release shows it on the card (`logged_recipe`), and retrain
copies a champion's from what it logged (`champion_recipe`). A new training knob is declared in `newscat.config`,
named in `FIXED` here and applied by the trainer: nothing else lists it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from newscat.config import Config
from newscat.serving.precision import use_bf16
from newscat.tracking.models import logged_params
from newscat.training.trainer import TrialParams

# The config's settings that shape every model's weights beside the trial's params: (section, field), recorded under
# the field's name on every run and LoggedModel.
FIXED: tuple[tuple[str, str], ...] = (
    ("model", "max_length"),
    ("train", "precision"),
    ("train", "freeze_embeddings"),
    ("train", "frozen_layers"),
    ("train", "dropout"),
    ("train", "pooling"),
    ("train", "layer_lr_decay"),
)
# The study's settings that choose among a study's weights or make its release (which checkpoint, which rows, which
# serving paths): one value per study, recorded in the study run's flat config (`section.field`), and copied by
# retrain with the rest.
STUDY: tuple[tuple[str, str], ...] = (
    ("model", "lexical"),
    ("model", "serving_paths"),
    ("train", "max_epochs"),
    ("train", "eval_batch_size"),
    ("train", "evals_per_epoch"),
    ("train", "metric"),
    ("train", "refit"),
    ("train", "refit_samples"),
    ("train", "average_weights"),
)
SAMPLED = tuple(field.name for field in dataclasses.fields(TrialParams))


@dataclass(frozen=True)
class Recipe:
    """What one model's weights were trained with: the trial's params, the fixed settings, base model, rows, seed."""

    params: TrialParams
    fixed: Mapping[str, Any]  # FIXED's fields, by name
    base_model: str
    rows: int
    seed: int  # the study's seed plus the trial's number

    @classmethod
    def of(cls, cfg: Config, params: TrialParams, *, number: int, rows: int) -> Recipe:
        """The recipe of trial `number` (or its refit) trained on `rows` rows under `cfg`."""
        fixed = {name: getattr(getattr(cfg, section), name) for section, name in FIXED}
        return cls(params, fixed, cfg.model.name, rows, cfg.seed + number)

    def model_params(self) -> dict[str, Any]:
        """A LoggedModel's params: exactly what produced its weights."""
        sampled = dataclasses.asdict(self.params)
        return {**sampled, "base_model": self.base_model, "train_rows": self.rows, "seed": self.seed, **self.fixed}

    def run_params(self, cfg: Config, number: int) -> dict[str, Any]:
        """A trial's or refit's run params: the recipe, with what the run adds to read it (the trial's number,
        whether bf16 autocast ran, the evaluation schedule and metric)."""
        return {
            **dataclasses.asdict(self.params),
            **self.fixed,
            "trial_number": number,
            "model": self.base_model,  # tracking masks a password in it
            "train_rows": self.rows,
            "seed": self.seed,
            "bf16": use_bf16(cfg.train.precision),
            "evals_per_epoch": cfg.train.evals_per_epoch,
            "metric": cfg.train.metric,
        }


def shown() -> tuple[str, ...]:
    """The recipe's names a model card shows in its params, in order (base model, text length, rows and seed have
    lines of their own)."""
    return SAMPLED + tuple(name for _, name in FIXED if name != "max_length")


def logged_recipe(model_id: str) -> dict[str, str]:
    """The recipe a LoggedModel recorded, as the card shows it (a refit under a budget may run fewer epochs than
    its trial: the model's own params say what it ran)."""
    logged = logged_params(model_id)
    return {name: logged[name] for name in shown() if name in logged}


def champion_recipe(model_params: Mapping[str, str], run_params: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The fixed and study settings a champion recorded, by config section, as config values: the LoggedModel's
    param first (what made the weights), else its study run's `section.field`; one recorded nowhere is left out (the
    config's value stands)."""
    recipe: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    for section, name in FIXED + STUDY:
        value = model_params.get(name) if (section, name) in FIXED else None
        value = value if value is not None else run_params.get(f"{section}.{name}")
        if value is not None:  # serving paths stay the comma-separated text the config parses
            recipe[section][name] = value if name == "serving_paths" else logged_value(value)
    return recipe


def logged_value(value: str) -> int | float | bool | str | None:
    """A param as MLflow logged it (the str of a bool, of None, of a number, or a word) back to its value."""
    words: dict[str, bool | None] = {"True": True, "False": False, "None": None}
    if value in words:
        return words[value]
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value
