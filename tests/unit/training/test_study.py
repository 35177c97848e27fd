from __future__ import annotations

import optuna
import pytest
from transformers import TrainerControl, TrainerState

from newscat.config import ConfigError, TuneConfig
from newscat.training.search_space import DEFAULT_SPACE, enqueue_first_trials, search_space_from, suggest_params
from newscat.training.study import (
    PruningCallback,
    StopWhen,
    finished_count,
    make_pruner,
    make_storage,
    open_study,
    study_lock,
    study_summary,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_default_space_samples_valid_params() -> None:
    space = search_space_from(None, max_epochs=3)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        params = suggest_params(study.ask(), space)
        assert 2e-5 <= params.learning_rate <= 3e-4
        assert params.batch_size in (16, 32)
        assert 1 <= params.epochs <= 3  # capped by max_epochs
        assert 0.0 <= params.warmup_ratio <= 0.2
        assert 0.0 <= params.weight_decay <= 0.1


def test_fixed_trial_and_overrides() -> None:
    space = search_space_from({"weight_decay": 0.0, "batch_size": {"choices": [8]}}, max_epochs=2)
    trial = optuna.trial.FixedTrial({"learning_rate": 5e-5, "batch_size": 8, "epochs": 2, "warmup_ratio": 0.05})
    params = suggest_params(trial, space)
    assert (params.learning_rate, params.batch_size, params.epochs, params.weight_decay) == (5e-5, 8, 2, 0.0)


def test_default_space_starts_with_a_known_good_trial() -> None:
    space = search_space_from(None, max_epochs=2)
    study = optuna.create_study(direction="maximize")
    enqueue_first_trials(study, space)
    params = suggest_params(study.ask(), space)
    assert (params.learning_rate, params.batch_size, params.epochs) == (1e-4, 32, 2)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dropout": {"low": 0, "high": 1}}, "unknown search-space parameter"),
        ({"learning_rate": {"low": 1e-3, "high": 1e-5}}, "needs low <= high"),
        ({"learning_rate": {"low": 0.0, "high": 1e-3, "log": True}}, "log range needs low > 0"),
        ({"batch_size": {"choices": []}}, "choices must not be empty"),
        ({"enqueue": [{"momentum": 0.9}]}, "enqueue entries"),
    ],
)
def test_bad_search_space(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        search_space_from(values, max_epochs=3)


def test_study_resumes_from_storage(tmp_path) -> None:
    cfg = TuneConfig(n_trials=2, study_name="s", storage=f"sqlite:///{tmp_path}/o.db")
    study = open_study(cfg, seed=0, max_evals=2)
    study.tell(study.ask(), 0.5)
    again = open_study(cfg, seed=0, max_evals=2)
    assert len(again.trials) == 1 and finished_count(again) == 1
    assert study_summary(again)["trials_complete"] == 1


def test_the_study_lives_in_the_storage_it_is_given_and_the_lock_runs_through_it(tmp_path) -> None:
    cfg = TuneConfig(n_trials=1, study_name="s", storage=f"sqlite:///{tmp_path}/o.db")
    storage = make_storage(cfg)
    study = open_study(cfg, seed=0, max_evals=2, storage=storage)
    study.tell(study.ask(), 0.5)
    assert optuna.load_study(study_name="s", storage=storage).trials[0].value == 0.5
    with study_lock(study.study_name, storage):
        assert (tmp_path / "o.db.newscat-lock").exists()


def test_bad_storage_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot open Optuna storage"):
        open_study(TuneConfig(storage="nosuchdb://x"), seed=0, max_evals=2)


@pytest.mark.parametrize(("earlier", "current", "pruned"), [(0.9, 0.3, True), (0.5, 0.8, False)])
def test_pruning_callback_stops_only_a_worse_trial(earlier: float, current: float, pruned: bool) -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    first = study.ask()
    first.report(earlier, step=1)  # the first of 4 evaluations per epoch
    study.tell(first, earlier)
    trial = study.ask()
    callback, state, control = PruningCallback(trial, "eval_accuracy", 4), TrainerState(), TrainerControl()
    state.epoch = 0.26  # a quarter epoch (a little past it, as step-based evaluation lands)
    callback.on_evaluate(None, state, control, metrics={"eval_accuracy": current})
    assert list(study.trials[1].intermediate_values) == [1]
    assert (callback.pruned_at == 0.26) is pruned
    assert control.should_training_stop is pruned


def test_halving_goes_on_only_with_the_best_of_fewer_than_three_then_the_top_third() -> None:
    study = optuna.create_study(direction="maximize", pruner=make_pruner(TuneConfig(pruner="halving"), max_evals=4))
    decisions = []
    for value in (0.8, 0.7, 0.85, 0.6, 0.9, 0.86, 0.84):
        trial = study.ask()
        trial.report(value, step=1)  # rung 0: the first evaluation
        decisions.append(trial.should_prune())
        study.tell(trial, value)
    # 1-5 values at rung 0: only the best so far goes on; 6 or 7 values: the top 2 (0.84 is third).
    assert decisions == [False, True, False, True, False, False, True]


def test_stop_when_stops_the_study_between_trials() -> None:
    study = optuna.create_study(direction="maximize")
    ran = []
    study.optimize(lambda t: ran.append(t.number) or 0.0, n_trials=5, callbacks=[StopWhen(lambda: len(ran) >= 2)])
    assert ran == [0, 1]


def test_default_space_keys_match_trial_params() -> None:
    assert set(DEFAULT_SPACE) == {"learning_rate", "batch_size", "epochs", "warmup_ratio", "weight_decay"}
