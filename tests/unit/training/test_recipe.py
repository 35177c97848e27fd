"""The recipe is the one list of what made a model's weights: every knob of the config is in it or said not to be,
the trial run and the LoggedModel record the same values, and a champion's recipe read back gives the same config."""

from __future__ import annotations

import dataclasses

from newscat.config import Config, ModelConfig, TrainConfig, build_config
from newscat.training.recipe import FIXED, SAMPLED, STUDY, Recipe, champion_recipe, shown
from newscat.training.trainer import TrialParams

# Not part of any model's recipe: the base model is recorded on its own (`base_model`), the work folder is scratch.
OUTSIDE = {("model", "name"), ("train", "work_dir")}
PARAMS = TrialParams(learning_rate=3e-5, batch_size=16, epochs=2, warmup_ratio=0.05, weight_decay=0.02)


def test_every_model_and_training_knob_is_in_the_recipe_or_said_to_be_outside_it() -> None:
    knobs = {("model", f.name) for f in dataclasses.fields(ModelConfig)}
    knobs |= {("train", f.name) for f in dataclasses.fields(TrainConfig)}
    assert knobs - OUTSIDE == set(FIXED) | set(STUDY)
    assert not set(FIXED) & set(STUDY)


def test_the_run_and_the_logged_model_record_the_same_recipe() -> None:
    cfg = build_config({"model": {"max_length": 64}, "train": {"dropout": 0.1, "pooling": "cls", "frozen_layers": 1}})
    recipe = Recipe.of(cfg, PARAMS, number=3, rows=900)
    on_model, on_run = recipe.model_params(), recipe.run_params(cfg, 3)
    assert (on_model["seed"], on_model["train_rows"], on_model["max_length"]) == (cfg.seed + 3, 900, 64)
    assert (on_model["dropout"], on_model["pooling"], on_model["frozen_layers"]) == (0.1, "cls", 1)
    shared = set(on_model) - {"base_model"}
    assert {k: on_run[k] for k in shared} == {k: on_model[k] for k in shared}
    assert on_run["model"] == on_model["base_model"] == cfg.model.name and on_run["trial_number"] == 3
    assert set(shown()) <= set(on_model) and shown()[: len(SAMPLED)] == SAMPLED


def test_a_recipe_read_back_from_its_logged_strings_rebuilds_the_config() -> None:
    cfg = build_config(
        {
            "model": {"max_length": 64, "lexical": "off", "serving_paths": ["onnx/fp32"]},
            "train": {"precision": "fp32", "freeze_embeddings": False, "layer_lr_decay": 0.8, "refit_samples": 0},
        }
    )
    logged = {k: str(v) for k, v in Recipe.of(cfg, PARAMS, number=0, rows=10).model_params().items()}
    read = champion_recipe(logged, cfg.to_flat_dict())
    rebuilt = build_config(read)
    for section, name in FIXED + STUDY:
        assert getattr(getattr(rebuilt, section), name) == getattr(getattr(cfg, section), name), (section, name)
    assert isinstance(rebuilt, Config)
